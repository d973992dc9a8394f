/**
 * The server-side token guard (requireToken) over real gRPC on 127.0.0.1, for the three kinds
 * of methods Shardline serves: unary (GetStatus), server-streaming (FetchDataset) and
 * client-streaming (a worker's peer Ring). A refused call must end with UNAUTHENTICATED and
 * the guard's message before its handler runs, whatever kind it is.
 */
import {
  credentials,
  Server,
  ServerCredentials,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceError,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { createLogger, type Logger } from '@shardline/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CHANNEL_OPTIONS,
  COORDINATOR_TOKEN_REFUSALS,
  CoordinatorClient,
  CoordinatorServiceDefinition,
  createTokenInterceptor,
  createTokenVerifier,
  type FetchDatasetRequest,
  type FetchDatasetResponse,
  fromGrpcStatus,
  GetStatusResponse,
  PeerServiceClient,
  PeerServiceService,
  PROTOCOL_VERSION,
  type RingRequest,
  type RingResponse,
  requireToken,
  type TokenRefusal,
} from '../src/index.js';

const TOKEN = 'unit-secret-0123456789abcdef';

describe('token verifier', () => {
  it('accepts only the exact token', () => {
    const verify = createTokenVerifier(TOKEN);
    expect(verify(TOKEN)).toBe(true);
    expect(verify(undefined)).toBe(false);
    expect(verify('')).toBe(false);
    expect(verify(`${TOKEN}x`)).toBe(false);
    expect(verify(TOKEN.slice(0, -1))).toBe(false);
    expect(verify(TOKEN.toUpperCase())).toBe(false);
  });
});

const PEER_MESSAGES: Record<TokenRefusal, string> = {
  'no token': 'This peer endpoint requires the job token; none was sent.',
  'wrong token': 'This peer endpoint got a token other than the job token.',
};

describe('requireToken over gRPC', () => {
  let server: Server;
  let address: string;
  const lines: string[] = [];
  const handled: string[] = [];
  const refusals: string[] = [];
  let logger: Logger;

  beforeAll(async () => {
    logger = createLogger({ level: 'warn', format: 'json', sink: { write: (l) => lines.push(l) } });
    server = new Server();
    const coordinator = {
      getStatus: (
        _call: ServerUnaryCall<unknown, GetStatusResponse>,
        cb: sendUnaryData<unknown>,
      ) => {
        handled.push('getStatus');
        cb(null, GetStatusResponse.fromPartial({ protocolVersion: PROTOCOL_VERSION }));
      },
      fetchDataset: (call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>) => {
        handled.push('fetchDataset');
        call.end();
      },
    };
    server.addService(
      CoordinatorServiceDefinition,
      requireToken(CoordinatorServiceDefinition, coordinator, {
        token: TOKEN,
        logger,
        onRefusal: (reason) => refusals.push(reason),
      }),
    );
    const peer = {
      ring: (
        call: ServerReadableStream<RingRequest, RingResponse>,
        cb: sendUnaryData<RingResponse>,
      ) => {
        handled.push('ring');
        let chunks = 0n;
        call.on('data', () => {
          chunks += 1n;
        });
        call.on('end', () => cb(null, { chunksReceived: chunks }));
      },
    };
    server.addService(
      PeerServiceService,
      requireToken(PeerServiceService, peer, { token: TOKEN, logger, messages: PEER_MESSAGES }),
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server.forceShutdown());

  const options = (token: string | undefined) => ({
    ...CHANNEL_OPTIONS,
    ...(token === undefined ? {} : { interceptors: [createTokenInterceptor(token)] }),
  });

  function getStatus(token: string | undefined): Promise<ServiceError | undefined> {
    const client = new CoordinatorClient(address, credentials.createInsecure(), options(token));
    return new Promise((resolve) =>
      client.getStatus({}, (error) => {
        client.close();
        resolve(error ?? undefined);
      }),
    );
  }

  function fetchDataset(token: string | undefined): Promise<ServiceError | undefined> {
    const client = new CoordinatorClient(address, credentials.createInsecure(), options(token));
    const call = client.fetchDataset({ workerId: 'w', fingerprint: 'f', offset: 0n });
    return new Promise((resolve) => {
      call.on('data', () => {});
      call.on('error', (error: ServiceError) => {
        client.close();
        resolve(error);
      });
      call.on('end', () => {
        client.close();
        resolve(undefined);
      });
    });
  }

  function ring(token: string | undefined): Promise<ServiceError | RingResponse> {
    const client = new PeerServiceClient(address, credentials.createInsecure(), options(token));
    return new Promise((resolve) => {
      const call = client.ring((error, response) => {
        client.close();
        resolve(error ?? response);
      });
      call.write({ kind: { $case: 'hello', value: helloFor() } });
      call.end();
    });
  }

  it('passes calls with the token to the handlers, for every kind of method', async () => {
    handled.length = 0;
    expect(await getStatus(TOKEN)).toBeUndefined();
    expect(await fetchDataset(TOKEN)).toBeUndefined();
    expect(await ring(TOKEN)).toEqual({ chunksReceived: 1n });
    expect(handled).toEqual(['getStatus', 'fetchDataset', 'ring']);
  });

  it('refuses calls without the token as UNAUTHENTICATED before any handler runs', async () => {
    handled.length = 0;
    lines.length = 0;
    refusals.length = 0;
    const refused = [await getStatus(undefined), await fetchDataset(undefined)];
    for (const error of refused) {
      expect(error?.code).toBe(status.UNAUTHENTICATED);
      expect(error?.details).toBe(COORDINATOR_TOKEN_REFUSALS['no token']);
    }
    const wrong = await getStatus('another-token-0123456789');
    expect(wrong?.details).toBe(COORDINATOR_TOKEN_REFUSALS['wrong token']);
    // The trailer carries the exact Shardline code back.
    expect(fromGrpcStatus(wrong!).code).toBe('UNAUTHENTICATED');
    expect(handled).toEqual([]);
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logged.map((r) => r.reason)).toEqual(['no token', 'no token', 'wrong token']);
    // The same reasons reach onRefusal, which the coordinator counts in its /metrics.
    expect(refusals).toEqual(['no token', 'no token', 'wrong token']);
    expect(lines.join('')).not.toContain('another-token');
  });

  it('words a refusal as the guarded server asks (a worker peer endpoint, not a coordinator)', async () => {
    handled.length = 0;
    const none = (await ring(undefined)) as ServiceError;
    expect(none.code).toBe(status.UNAUTHENTICATED);
    expect(none.details).toBe(PEER_MESSAGES['no token']);
    const wrong = (await ring('another-token-0123456789')) as ServiceError;
    expect(wrong.details).toBe(PEER_MESSAGES['wrong token']);
    expect(handled).toEqual([]);
  });

  it('keeps the coordinator wording by default, naming --token and SHARDLINE_TOKEN', () => {
    expect(COORDINATOR_TOKEN_REFUSALS['no token']).toMatch(
      /^This coordinator requires a token on every call, and this call carried none\. Give the worker the coordinator's token with --token or SHARDLINE_TOKEN/,
    );
  });

  it('refuses to wrap a handler its service definition lacks', () => {
    expect(() =>
      requireToken(
        PeerServiceService,
        { ring: () => {}, other: () => {} },
        { token: TOKEN, logger },
      ),
    ).toThrow(/handler "other" that its definition lacks/);
  });
});

function helloFor() {
  return {
    protocolVersion: PROTOCOL_VERSION,
    jobId: 'job',
    ringId: 'ring',
    senderRank: 0,
    worldSize: 2,
    senderWorkerId: 'w0',
  };
}
