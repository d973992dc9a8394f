/**
 * The coordinator's security decisions without a network: which --listen addresses are refused
 * or warned about, and what local workers are handed (token by environment only). The
 * constant-time token check lives in @shardline/protocol and is tested there (test/auth.test.ts).
 * No socket is opened here; security.e2e.test.ts covers the wire.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@shardline/core';
import { makeCertificate } from '@shardline/test-support/certificates';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  localDialAddress,
  readSecurityFlags,
  resolveServerSecurity,
  type ServerSecurityFlags,
} from '../src/distributed/security.js';

const TOKEN = 'unit-secret-0123456789abcdef';

function resolveWith(flags: ServerSecurityFlags, listen: string, localWorkers = 0) {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'debug',
    format: 'json',
    sink: { write: (l) => lines.push(l) },
  });
  const security = resolveServerSecurity(flags, { listen, localWorkers }, logger);
  const warnings = lines
    .map((l) => JSON.parse(l) as { level: string; msg: string })
    .filter((r) => r.level === 'warn')
    .map((r) => r.msg);
  return { security, warnings, log: lines.join('') };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shardline-security-unit-'));
  makeCertificate(dir, 'ca', 'CA', undefined, []);
  makeCertificate(dir, 'leaf', 'coordinator.example', 'ca', [
    'subjectAltName=DNS:coordinator.example',
    'basicConstraints=critical,CA:FALSE',
    'extendedKeyUsage=serverAuth',
  ]);
  makeCertificate(dir, 'self', 'self', undefined, ['subjectAltName=IP:127.0.0.1']);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('listen policy', () => {
  it.each(['127.0.0.1:7070', '127.3.2.1:0', 'localhost:7070', '[::1]:7070'])(
    'allows %s with neither token nor TLS, without warnings',
    (listen) => {
      const { security, warnings } = resolveWith({}, listen);
      expect(security.tls).toBe('off');
      expect(security.tokenRequired).toBe(false);
      expect(warnings).toEqual([]);
    },
  );

  it.each(['0.0.0.0:7070', '[::]:7070', '10.0.0.5:7070', 'coordinator.example:7070'])(
    'refuses %s with neither token nor TLS, naming the ways out',
    (listen) => {
      expect(() => resolveWith({}, listen)).toThrow(
        /Refusing to listen on .* with neither a token nor TLS.*--token or SHARDLINE_TOKEN.*--tls-cert.*127\.0\.0\.1.*--insecure/,
      );
    },
  );

  it('allows a non-loopback address with --insecure, with a warning', () => {
    const { warnings } = resolveWith({ insecure: true }, '0.0.0.0:7070');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /--insecure: listening on 0\.0\.0\.0:7070 with neither a token nor TLS/,
    );
  });

  it('allows a token without TLS beyond loopback, warning that it travels in clear text', () => {
    const { security, warnings, log } = resolveWith({ token: TOKEN }, '0.0.0.0:7070');
    expect(security.tokenRequired).toBe(true);
    expect(warnings.join('\n')).toMatch(
      /the token, the weights and the gradients travel in clear text/,
    );
    expect(log).not.toContain(TOKEN);
  });

  it('warns about TLS without any client authentication beyond loopback', () => {
    const { security, warnings } = resolveWith(
      { tlsCert: join(dir, 'leaf.pem'), tlsKey: join(dir, 'leaf.key') },
      '0.0.0.0:7070',
    );
    expect(security.tls).toBe('tls');
    expect(warnings.join('\n')).toMatch(/any client that reaches this port can join/);
  });

  it('refuses tokens that cannot travel as metadata, without quoting them', () => {
    expect(() => resolveWith({ token: 'with space-0123456789' }, '127.0.0.1:0')).toThrow(
      /contains whitespace at position 5/,
    );
    expect(() => resolveWith({ token: '' }, '127.0.0.1:0')).toThrow(/is empty/);
    let message = '';
    try {
      resolveWith({ token: 'abcdefghijklmnop\n' }, '127.0.0.1:0');
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/whitespace at position 17.*strip the trailing newline/);
    expect(message).not.toContain('abcdefghijklmnop');
  });
});

describe('local workers', () => {
  // Inherited SHARDLINE_* worker variables (TLS files among them) are dropped when the
  // processes start: security.e2e.test.ts checks that with stray variables set.
  it('get the token through the environment only', () => {
    const { security } = resolveWith({ token: TOKEN }, '127.0.0.1:0', 2);
    const link = security.localWorkers('127.0.0.1:4321');
    expect(link.coordinator).toBe('127.0.0.1:4321');
    expect(link.args.join(' ')).not.toContain(TOKEN);
    expect(link.env).toMatchObject({ SHARDLINE_TOKEN: TOKEN });
    const without = resolveWith({}, '127.0.0.1:0', 2).security.localWorkers('127.0.0.1:1');
    // A SHARDLINE_TOKEN in the coordinator's environment would have been read as --token.
    expect(without.env).toHaveProperty('SHARDLINE_TOKEN', undefined);
  });

  it('dial loopback when the coordinator listens on a wildcard address', () => {
    expect(localDialAddress('0.0.0.0:7070')).toBe('127.0.0.1:7070');
    expect(localDialAddress('[::]:7070')).toBe('[::1]:7070');
    expect(localDialAddress('10.0.0.5:7070')).toBe('10.0.0.5:7070');
  });

  it('trust the CA that signed the certificate and check the name the certificate lists', () => {
    const { security } = resolveWith(
      { tlsCert: join(dir, 'leaf.pem'), tlsKey: join(dir, 'leaf.key') },
      '127.0.0.1:0',
    );
    // No --tls-ca: the leaf holds no root, so the system roots are all a worker could use.
    expect(security.localWorkers('127.0.0.1:1').args).toEqual([
      '--tls',
      '--tls-server-name',
      'coordinator.example',
    ]);
    const self = resolveWith(
      { tlsCert: join(dir, 'self.pem'), tlsKey: join(dir, 'self.key') },
      '127.0.0.1:0',
    ).security.localWorkers('127.0.0.1:1');
    // A self-signed certificate is its own CA; it lists 127.0.0.1, so no name override.
    expect(self.args).toEqual(['--tls-ca', join(dir, 'self.pem')]);
  });

  it('under mutual TLS, refuse at startup a coordinator certificate local workers cannot present', () => {
    const flags = {
      tlsCert: join(dir, 'leaf.pem'),
      tlsKey: join(dir, 'leaf.key'),
      tlsCa: join(dir, 'ca.pem'),
    };
    // leaf.pem allows serverAuth only.
    expect(() => resolveWith(flags, '127.0.0.1:0', 1)).toThrow(
      /local workers present the coordinator's own certificate.*does not allow client authentication.*--local-workers 0/,
    );
    // Without local workers it is fine: remote workers bring their own certificates.
    const { security } = resolveWith(flags, '127.0.0.1:0', 0);
    expect(security.tls).toBe('mutual');
  });
});

describe('readSecurityFlags', () => {
  it('reads --token-file, and refuses it beside --token', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shardline-token-file-'));
    try {
      const file = join(dir, 'token');
      await writeFile(file, `${TOKEN}\n`, { mode: 0o600 });
      expect(readSecurityFlags({ tokenFile: file }).token).toBe(TOKEN);
      expect(() => readSecurityFlags({ token: TOKEN, tokenFile: file })).toThrow(
        /Both a token \(--token or SHARDLINE_TOKEN\) and a token file .* are set/,
      );
      // The error names the variable when the path came from the environment.
      expect(() => readSecurityFlags({ tokenFile: join(dir, 'absent') }, () => 'env')).toThrow(
        /\(from SHARDLINE_TOKEN_FILE\) cannot be read/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
