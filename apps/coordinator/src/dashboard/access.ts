/**
 * Who may use the dashboard: with a token, every request must prove it knows the job's token,
 * by one of
 * - `Authorization: Bearer <token>` (curl, Prometheus' `authorization` / `bearer_token_file`);
 * - `?token=<token>` once, from a browser: the answer sets an HttpOnly cookie and, for a page
 *   navigation, redirects to the same URL without the token, so it leaves the address bar and
 *   the history; later requests (the page's scripts, its event stream) carry the cookie.
 *
 * Everything is compared in constant time (SHA-256 of both sides, then `timingSafeEqual`,
 * @shardline/protocol's `createTokenVerifier`, as the gRPC port does). The cookie holds a
 * digest of the token rather than the token: a leaked cookie opens this dashboard, not the job's
 * gRPC port. Its name carries the port, since browsers share cookies across a host's ports.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createTokenVerifier, TOKEN_ENV } from '@shardline/protocol';

/** Answers a request that lacks the token, or lets it through; see the module comment. */
export type AccessCheck = (request: IncomingMessage, response: ServerResponse, url: URL) => boolean;

/** The cookie a dashboard on `port` sets. */
export function accessCookieName(port: number): string {
  return `shardline_dashboard_${port}`;
}

/** The cookie's value for `token`: a digest, never the token itself. */
function cookieValue(token: string): string {
  return createHash('sha256').update(`shardline-dashboard:${token}`, 'utf8').digest('hex');
}

/** The value of cookie `name` in a Cookie header, if present. */
function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive). */
function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '');
  return match?.[1];
}

/** Whether the request is a browser opening a page (rather than a script or a scraper). */
function isNavigation(request: IncomingMessage): boolean {
  const mode = request.headers['sec-fetch-mode'];
  if (mode !== undefined) return mode === 'navigate';
  return (request.headers.accept ?? '').includes('text/html');
}

/**
 * The access check of a dashboard on `port`: with no `token` every request passes (a loopback
 * dashboard); with one, see the module comment.
 *
 * @example
 * ```ts
 * const allowed = createAccessCheck(token, 7071);
 * if (!allowed(request, response, url)) return; // answered 401 or redirected
 * ```
 */
export function createAccessCheck(token: string | undefined, port: number): AccessCheck {
  if (token === undefined) return () => true;
  const verifyToken = createTokenVerifier(token);
  const expectedCookie = cookieValue(token);
  const verifyCookie = createTokenVerifier(expectedCookie);
  const name = accessCookieName(port);
  return (request, response, url) => {
    const bearer = bearerToken(request.headers.authorization);
    if (verifyToken(bearer)) return true;
    const cookie = readCookie(request.headers.cookie, name);
    if (verifyCookie(cookie)) return true;
    const fromQuery = url.searchParams.get('token') ?? undefined;
    if (fromQuery !== undefined && verifyToken(fromQuery)) {
      response.setHeader(
        'set-cookie',
        `${name}=${expectedCookie}; Path=/; HttpOnly; SameSite=Strict`,
      );
      if (!isNavigation(request)) return true;
      const clean = new URL(url);
      clean.searchParams.delete('token');
      response.writeHead(303, { location: `${clean.pathname}${clean.search}` });
      response.end();
      return false;
    }
    response.writeHead(401, {
      'content-type': 'text/plain; charset=utf-8',
      'www-authenticate': 'Bearer realm="shardline"',
      'cache-control': 'no-store',
    });
    response.end(
      `This dashboard requires the job's token (the coordinator's --token, --token-file or ${TOKEN_ENV}), and this request carried ${(bearer ?? cookie ?? fromQuery) ? 'a wrong one' : 'none'}. ` +
        'Send "Authorization: Bearer <token>", or open <dashboard URL>/?token=<token> once in the browser.\n',
    );
    return false;
  };
}
