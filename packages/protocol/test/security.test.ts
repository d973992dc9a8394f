import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  acceptToken,
  CHANNEL_OPTIONS,
  CoordinatorClient,
  CoordinatorServiceDefinition,
  type CoordinatorServiceServer,
  checkToken,
  createTokenInterceptor,
  type GetStatusRequest,
  GetStatusResponse,
  isLoopbackHost,
  readCertificateFile,
  readPrivateKeyFile,
  readTlsFiles,
  readTokenFile,
  type TrainRequest,
  type TrainResponse,
  tokenFromMetadata,
} from '../src/index.js';

describe('token metadata', () => {
  it('reads a Bearer authorization header or the shardline-token header', () => {
    const md = (key: string, value: string) => {
      const m = new Metadata();
      m.set(key, value);
      return m;
    };
    expect(tokenFromMetadata(md('authorization', 'Bearer abc'))).toBe('abc');
    expect(tokenFromMetadata(md('authorization', 'bearer  abc '))).toBe('abc');
    expect(tokenFromMetadata(md('shardline-token', 'abc'))).toBe('abc');
    expect(tokenFromMetadata(md('authorization', 'Basic abc'))).toBeUndefined();
    expect(tokenFromMetadata(md('authorization', 'abc'))).toBeUndefined();
    expect(tokenFromMetadata(new Metadata())).toBeUndefined();
  });

  it('accepts visible ASCII tokens only, and never quotes them in errors', () => {
    expect(checkToken('a-Z_0.9~!', 'T')).toBe('a-Z_0.9~!');
    for (const bad of ['', 'sec ret', 'secret\n', 'sécret']) {
      let message = '';
      try {
        checkToken(bad, '--token');
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message, JSON.stringify(bad)).toMatch(/^--token (is empty|contains)/);
      if (bad.length > 2) expect(message).not.toContain(bad.trim());
    }
  });

  it('tells loopback hosts from the rest', () => {
    for (const h of ['127.0.0.1', '127.255.0.9', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1'])
      expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'example.com', '127.0.0.1.nip.io'])
      expect(isLoopbackHost(h), h).toBe(false);
  });
});

describe('acceptToken', () => {
  it('passes a good token through, warns about a short one, and refuses a bad one', () => {
    const warnings: string[] = [];
    const logger = { warn: (m: string) => warnings.push(m) };
    expect(acceptToken(undefined, logger)).toBeUndefined();
    expect(acceptToken('0123456789abcdef0123', logger)).toBe('0123456789abcdef0123');
    expect(warnings).toEqual([]);
    expect(acceptToken('short', logger)).toBe('short');
    expect(warnings).toEqual([expect.stringMatching(/shorter than 16 characters/)]);
    expect(() => acceptToken('has space', logger)).toThrow(
      /--token \/ SHARDLINE_TOKEN contains whitespace/,
    );
  });
});

describe('readTokenFile', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shardline-token-file-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('reads the token and drops one trailing newline, as echo and editors write it', async () => {
    await writeFile(join(dir, 'unix'), 'abc123-token-value\n');
    await writeFile(join(dir, 'windows'), 'abc123-token-value\r\n');
    await writeFile(join(dir, 'bare'), 'abc123-token-value');
    for (const name of ['unix', 'windows', 'bare']) {
      expect(readTokenFile(join(dir, name), '--token-file')).toBe('abc123-token-value');
    }
  });

  it('refuses a missing, empty or whitespace-holding file, naming the path and where it came from', async () => {
    expect(() => readTokenFile(join(dir, 'absent'), 'SHARDLINE_TOKEN_FILE')).toThrow(
      /token file .*absent \(from SHARDLINE_TOKEN_FILE\) cannot be read \(it does not exist\)/,
    );
    await writeFile(join(dir, 'empty'), '\n');
    expect(() => readTokenFile(join(dir, 'empty'), '--token-file')).toThrow(
      /is empty: expected the shared token/,
    );
    await writeFile(join(dir, 'spaced'), 'two words\n');
    expect(() => readTokenFile(join(dir, 'spaced'), '--token-file')).toThrow(
      /contains whitespace at position 4/,
    );
    // Two newlines: the second one is not the file's ending, so it is part of the token.
    await writeFile(join(dir, 'double'), 'abc\n\n');
    expect(() => readTokenFile(join(dir, 'double'), '--token-file')).toThrow(/whitespace/);
  });
});

describe('createTokenInterceptor', () => {
  let server: Server;
  let address: string;
  const seen: Array<string | undefined> = [];
  beforeAll(async () => {
    server = new Server();
    const service = {
      getStatus: (
        call: ServerUnaryCall<GetStatusRequest, GetStatusResponse>,
        callback: sendUnaryData<GetStatusResponse>,
      ) => {
        seen.push(tokenFromMetadata(call.metadata));
        callback(null, GetStatusResponse.fromPartial({}));
      },
      train: (call: ServerDuplexStream<TrainRequest, TrainResponse>) => {
        seen.push(tokenFromMetadata(call.metadata));
        call.end();
      },
    };
    server.addService(CoordinatorServiceDefinition, service as unknown as CoordinatorServiceServer);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server.forceShutdown());

  it('sends the token on unary calls and on streams', async () => {
    const client = new CoordinatorClient(address, credentials.createInsecure(), {
      ...CHANNEL_OPTIONS,
      interceptors: [createTokenInterceptor('tok-123')],
    });
    try {
      await new Promise((resolve, reject) =>
        client.getStatus({}, (e, r) => (e ? reject(e) : resolve(r))),
      );
      await new Promise<void>((resolve, reject) => {
        const call = client.train();
        call.on('data', () => {});
        call.on('end', () => resolve());
        call.on('error', reject);
        call.end();
      });
    } finally {
      client.close();
    }
    expect(seen).toEqual(['tok-123', 'tok-123']);
  });
});

describe('TLS files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shardline-tls-files-'));
    const plain = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(
      join(dir, 'key.pem'),
      plain.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    );
    const encrypted = generateKeyPairSync('ec', {
      namedCurve: 'P-256',
      privateKeyEncoding: {
        type: 'pkcs8',
        format: 'pem',
        cipher: 'aes-256-cbc',
        passphrase: 'pw',
      },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    await writeFile(join(dir, 'encrypted.pem'), encrypted.privateKey);
    await writeFile(
      join(dir, 'key.der'),
      plain.privateKey.export({ type: 'pkcs8', format: 'der' }) as Buffer,
    );
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('says what each flag expected and what the file holds', () => {
    expect(() => readCertificateFile(join(dir, 'key.pem'), '--tls-cert')).toThrow(
      /--tls-cert .*key\.pem is not a PEM certificate file: expected "-----BEGIN CERTIFICATE-----", found only "PRIVATE KEY". It holds a private key: did you swap --tls-cert and --tls-key\?/,
    );
    expect(() => readCertificateFile(join(dir, 'key.der'), '--tls-ca', { leaf: false })).toThrow(
      /found no PEM block at all \(a DER file\?/,
    );
    expect(() => readCertificateFile(join(dir, 'missing.pem'), '--tls-ca')).toThrow(
      /Cannot read --tls-ca .*missing\.pem \(no such file\)/,
    );
    expect(() => readPrivateKeyFile(join(dir, 'encrypted.pem'), '--tls-key')).toThrow(
      /is encrypted with a passphrase.*openssl pkey/,
    );
    expect(readPrivateKeyFile(join(dir, 'key.pem'), '--tls-key').key.asymmetricKeyType).toBe('ec');
    expect(() => readTlsFiles({ key: join(dir, 'key.pem') })).toThrow(
      /--tls-key was given without --tls-cert/,
    );
  });
});
