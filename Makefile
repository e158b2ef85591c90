# The two commands the README promises, and the slower checks behind them.
.PHONY: demo test unit vm-test bench deb cross sysroot release-check

# Build and run the daemon with two synthetic cameras: open http://localhost:8080/
demo:
	scripts/install-deps.sh run
	cargo run --release -- run --demo 2

# Everything CI runs: unit tests, end-to-end tests with real browsers, and the V4L2/udev tests in a VM.
test:
	scripts/test.sh

unit:
	cargo test --lib

vm-test:
	tests/vm/run.sh

bench:
	bench/run.sh

deb:
	scripts/build-deb.sh

cross:
	scripts/cross-build.sh

sysroot:
	scripts/sysroot-build.sh

release-check:
	scripts/release-check.sh
