/**
 * How a worker reads the coordinator's refusals. The error texts below are what grpc-js 1.14
 * on Node 20 reports for each failure (captured from real handshakes against a grpc-js server);
 * the coordinator's e2e tests cover the same cases over real sockets.
 */
import { Metadata, status } from '@grpc/grpc-js';
import { createLogger, ShardlineError } from '@shardline/core';
import { fromGrpcStatus, toGrpcStatus } from '@shardline/protocol';
import { describe, expect, it } from 'vitest';
import {
  explainSecurityFailure,
  plaintextChannel,
  readWorkerSecurityFlags,
  resolveWorkerChannel,
  tlsFailure,
} from '../src/security.js';

const silent = createLogger({ level: 'silent' });

function unavailable(details: string) {
  return { code: status.UNAVAILABLE, details, metadata: new Metadata(), message: details };
}

const CAPTURED = {
  refused:
    'No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ',
  plaintextToTls:
    'No connection established. Last error: Failed to connect (2026-11-29T12:46:44.011Z). Resolution note: ',
  untrusted:
    'No connection established. Last error: Error: unable to verify the first certificate. Resolution note: ',
  notTls:
    'No connection established. Last error: Error: 80BC4A88197F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n. Resolution note: ',
  certificateRequired:
    'No connection established. Last error: 80BC4A88197F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n (2026-11-29T12:46:44.088Z). Resolution note: ',
  wrongPurpose:
    'No connection established. Last error: Error: unsuitable certificate purpose. Resolution note: ',
  nameMismatch:
    "No connection established. Last error: Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: Host: nothere. is not in the cert's altnames: DNS:localhost, IP Address:127.0.0.1. Resolution note: ",
};

describe('tlsFailure', () => {
  it('recognises each handshake failure and leaves other network errors alone', () => {
    expect(tlsFailure(unavailable(CAPTURED.refused))).toBeUndefined();
    expect(tlsFailure(unavailable(CAPTURED.plaintextToTls))).toBeUndefined();
    expect(tlsFailure(unavailable(CAPTURED.untrusted))).toEqual({
      kind: 'untrusted',
      reason: 'unable to verify the first certificate',
    });
    expect(tlsFailure(unavailable(CAPTURED.notTls))).toEqual({
      kind: 'not-tls',
      reason: 'wrong version number',
    });
    expect(tlsFailure(unavailable(CAPTURED.certificateRequired))).toEqual({
      kind: 'client-certificate-required',
      reason: 'tlsv13 alert certificate required',
    });
    expect(tlsFailure(unavailable(CAPTURED.nameMismatch))?.kind).toBe('name-mismatch');
    expect(tlsFailure(unavailable(CAPTURED.wrongPurpose))).toEqual({
      kind: 'wrong-purpose',
      reason: 'unsuitable certificate purpose',
    });
    expect(tlsFailure(unavailable(CAPTURED.nameMismatch))?.reason).toMatch(
      /^Hostname\/IP does not match certificate's altnames: Host: nothere/,
    );
  });
});

describe('explainSecurityFailure', () => {
  const withToken = { ...plaintextChannel(), token: true };
  // What runWorker throws after a refused Join: the coordinator's status, converted.
  const refusedToken = fromGrpcStatus(
    toGrpcStatus(
      new ShardlineError('UNAUTHENTICATED', 'The token this call carried does not match.'),
    ),
  );

  it("says the coordinator refused this worker's token, never quoting it", () => {
    const e = explainSecurityFailure(refusedToken, withToken, '10.0.0.5:7070');
    expect(e.code).toBe('UNAUTHENTICATED');
    expect(e.message).toMatch(
      /^The coordinator refused this worker's token: check --token \/ SHARDLINE_TOKEN/,
    );
    const none = explainSecurityFailure(refusedToken, plaintextChannel(), '10.0.0.5:7070');
    expect(none.message).toMatch(/requires a token and this worker sent none: check --token/);
  });

  it('names the TLS fix for each handshake failure', () => {
    const tls = { ...plaintextChannel(), tls: true };
    const explain = (details: string) =>
      explainSecurityFailure(fromGrpcStatus(unavailable(details)), tls, '127.0.0.1:7070').message;
    expect(explain(CAPTURED.untrusted)).toMatch(/not trusted.*--tls-ca/);
    expect(explain(CAPTURED.notTls)).toMatch(/does not speak TLS/);
    expect(explain(CAPTURED.certificateRequired)).toMatch(/requires a client certificate/);
    expect(explain(CAPTURED.nameMismatch)).toMatch(/--tls-server-name/);
    expect(explain(CAPTURED.wrongPurpose)).toMatch(
      /does not allow server authentication.*extendedKeyUsage serverAuth/,
    );
  });

  it('suggests TLS when a plaintext worker cannot connect, and passes other errors through', () => {
    const plain = explainSecurityFailure(
      fromGrpcStatus(unavailable(CAPTURED.plaintextToTls)),
      plaintextChannel(),
      '127.0.0.1:7070',
    );
    expect(plain.message).toMatch(/If the coordinator serves TLS, pass --tls-ca/);
    const other = new ShardlineError('MISMATCH', 'layouts differ');
    expect(explainSecurityFailure(other, plaintextChannel(), 'x:1')).toBe(other);
  });
});

describe('resolveWorkerChannel', () => {
  it('turns TLS on with --tls, and sends the token only when given', () => {
    const plain = resolveWorkerChannel({}, '127.0.0.1:7070', silent);
    expect(plain).toMatchObject({ tls: false, token: false, options: {} });
    const tls = resolveWorkerChannel({ tls: true, token: 'abcdefghijklmnopq' }, 'h:1', silent);
    expect(tls).toMatchObject({ tls: true, token: true, clientCertificate: false });
    expect(tls.options.interceptors).toHaveLength(1);
  });

  it('refuses a server name without TLS, and a bad token, before connecting', () => {
    expect(() =>
      resolveWorkerChannel({ tlsServerName: 'coordinator.example' }, 'h:1', silent),
    ).toThrow(/--tls-server-name .* only applies to TLS/);
    expect(() => resolveWorkerChannel({ token: 'two words' }, 'h:1', silent)).toThrow(
      /--token \/ SHARDLINE_TOKEN contains whitespace/,
    );
    expect(() => resolveWorkerChannel({ tlsCert: '/nowhere/cert.pem' }, 'h:1', silent)).toThrow(
      /--tls-cert \/ SHARDLINE_TLS_CERT was given without --tls-key \/ SHARDLINE_TLS_KEY/,
    );
  });

  it('warns when a token would travel in clear text to another machine', () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: 'warn',
      format: 'text',
      sink: { write: (l) => lines.push(l) },
    });
    resolveWorkerChannel({ token: 'abcdefghijklmnopq' }, '127.0.0.1:7070', logger);
    expect(lines).toEqual([]);
    resolveWorkerChannel({ token: 'abcdefghijklmnopq' }, '10.0.0.5:7070', logger);
    expect(lines.join('')).toMatch(/sending the token to 10\.0\.0\.5:7070 without TLS/);
    expect(lines.join('')).not.toContain('abcdefghijklmnopq');
  });

  it('reads the flags commander parsed', () => {
    expect(
      readWorkerSecurityFlags({ tls: undefined, tlsCa: '/ca.pem', token: 't', name: 'x' }),
    ).toEqual({ tls: false, tlsCa: '/ca.pem', token: 't' });
  });
});
