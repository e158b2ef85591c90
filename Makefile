# The two commands the README promises, and the slower checks behind them.
.PHONY: demo test unit vm-test bench deb deb-arm64 cross sysroot release-check

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

# The arm64 .deb for a Raspberry Pi, by the route that needs no containers (an arm64 Debian 12 sysroot);
# `make cross` builds the same package with cross in podman.
deb-arm64:
	scripts/sysroot-build.sh

cross:
	scripts/cross-build.sh

sysroot:
	scripts/sysroot-build.sh

release-check:
	scripts/release-check.sh
