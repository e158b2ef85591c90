// Logging in for the websocket. Browsers cannot put an Authorization header on a WebSocket, so the
// page, already logged in for its own requests (the browser's Basic prompt), asks /api/ticket for a
// short-lived one-use ticket and passes it in the /ws URL.

// A same-origin URL without user:password@, which fetch() refuses and the browser's login supplies anyway.
export function pageUrl(path) {
  const url = new URL(path, location.href);
  url.username = '';
  url.password = '';
  return url;
}

// The /ws URL to open now: with a fresh ticket, or without one if the daemon needs no login.
export async function socketUrl() {
  const url = pageUrl('ws');
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const res = await fetch(pageUrl('api/ticket'), { cache: 'no-store' });
  if (!res.ok) throw new Error(`no websocket ticket: HTTP ${res.status}`);
  const { ticket } = await res.json();
  url.searchParams.set('ticket', ticket);
  return url;
}
