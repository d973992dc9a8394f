import * as http2 from 'node:http2';
import {
  credentials,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AssembledTensor,
  applyServerFlowControlWindow,
  CHANNEL_OPTIONS,
  CoordinatorClient,
  CoordinatorServiceClient,
  CoordinatorServiceDefinition,
  type CoordinatorServiceServer,
  CoordinatorServiceService,
  createTensorAssembler,
  DataType,
  DEFAULT_CHUNK_BYTES,
  decodeTensor,
  encodeTensor,
  FLOW_CONTROL_WINDOW_BYTES,
  fromGrpcStatus,
  gradientMessages,
  JoinResponse,
  PROTOCOL_VERSION,
  protocolVersionError,
  SERVER_OPTIONS,
  StopReason,
  type TensorMeta,
  type TrainRequest,
  type TrainResponse,
  toGrpcStatus,
  weightsMessages,
  writeMessages,
} from '../src/index.js';

// The seed CNN: 1,413,834 float32 parameters, 5,655,336 bytes, more than grpc-js's default
// 4 MiB (4,194,304-byte) receive limit, which neither side raises in this test.
const PARAMS = 1_413_834;
const FINGERPRINT = 'a1b2c3d4e5f60718';
const DEFAULT_GRPC_RECEIVE_LIMIT = 4 * 1024 * 1024;

function meta(version: bigint, step: bigint): TensorMeta {
  return {
    dtype: DataType.FLOAT32,
    shape: [PARAMS],
    elementCount: PARAMS,
    layoutFingerprint: FINGERPRINT,
    version,
    step,
  };
}

/** What the test coordinator does with a gradient: a recognisable, exact transformation. */
function nextWeights(gradient: Float32Array): Float32Array {
  return gradient.map((g) => g * -0.5 + 1);
}

/**
 * A minimal coordinator: checks the version on Join; on Train, reassembles the gradient,
 * answers with new weights (chunked) and a Stop, refusing broken transfers with a status.
 *
 * Events rather than `for await`: a Readable's async iterator destroys the stream when the loop
 * ends, and a destroyed grpc-js call never sends its status, so the client would hang.
 */
function trainHandler(call: ServerDuplexStream<TrainRequest, TrainResponse>): void {
  const assembler = createTensorAssembler({
    maxTensorBytes: PARAMS * 4,
    expectedFingerprint: FINGERPRINT,
    expectedElementCount: PARAMS,
    label: 'gradient',
  });
  const fail = (error: unknown) => call.emit('error', toGrpcStatus(error));
  const reply = async (tensor: AssembledTensor) => {
    const weights = nextWeights(decodeTensor(tensor.bytes, tensor.meta.dtype));
    await writeMessages(
      call,
      weightsMessages(meta(tensor.meta.version + 1n, tensor.meta.step), encodeTensor(weights)),
    );
    call.write({
      kind: {
        $case: 'stop',
        value: { reason: StopReason.JOB_DONE, message: 'done', rejoinAllowed: false },
      },
    });
  };
  call.on('data', (message: TrainRequest) => {
    try {
      if (message.kind?.$case !== 'gradient') return;
      const tensor = assembler.push(message.kind.value.chunk!);
      if (!tensor) return;
      // Hold further messages (and 'end') until the reply is written.
      call.pause();
      reply(tensor).then(() => call.resume(), fail);
    } catch (error) {
      fail(error);
    }
  });
  call.on('end', () => {
    try {
      assembler.end();
      call.end();
    } catch (error) {
      fail(error);
    }
  });
}

const implementation: CoordinatorServiceServer = {
  join(call, callback) {
    const refusal = protocolVersionError(call.request.protocolVersion, {
      role: 'worker',
      name: call.request.workerName,
    });
    if (refusal) {
      callback(toGrpcStatus(refusal), null);
      return;
    }
    callback(
      null,
      JoinResponse.create({
        workerId: 'w-1',
        protocolVersion: PROTOCOL_VERSION,
        weightsVersion: 7n,
      }),
    );
  },
  train: trainHandler,
  leave(_call, callback) {
    callback(null, {});
  },
  getStatus(_call, callback) {
    callback(toGrpcStatus(new Error('not implemented in this test')), null);
  },
  fetchDataset(call) {
    call.destroy(toGrpcStatus(new Error('not implemented in this test')) as unknown as Error);
  },
};

const servers: Server[] = [];
/** Clients by pairing: generated definition on both sides, or the one-copy one on either side. */
const clients = {} as Record<
  'generated' | 'one-copy server' | 'one-copy client',
  CoordinatorServiceClient
>;
let client: CoordinatorServiceClient; // generated on both sides

/** A server with default options: the 4 MiB receive limit is in force. */
async function listen(
  definition: typeof CoordinatorServiceService,
  server = new Server(),
): Promise<string> {
  servers.push(server);
  server.addService(definition, implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, p) =>
      error ? reject(error) : resolve(p),
    ),
  );
  return `127.0.0.1:${port}`;
}

beforeAll(async () => {
  const generated = await listen(CoordinatorServiceService);
  const oneCopy = await listen(CoordinatorServiceDefinition);
  const insecure = credentials.createInsecure();
  clients.generated = new CoordinatorServiceClient(generated, insecure);
  clients['one-copy server'] = new CoordinatorServiceClient(oneCopy, insecure);
  clients['one-copy client'] = new CoordinatorClient(generated, insecure);
  client = clients.generated;
});

afterAll(() => {
  for (const c of Object.values(clients)) c.close();
  for (const server of servers) server.forceShutdown();
});

/** Runs one Train session: sends `requests`, collects the responses, or rejects with the status. */
async function trainSession(
  requests: Iterable<TrainRequest>,
  using: CoordinatorServiceClient = client,
): Promise<TrainResponse[]> {
  const call = using.train();
  const responses: TrainResponse[] = [];
  const done = new Promise<TrainResponse[]>((resolve, reject) => {
    call.on('data', (message: TrainResponse) => responses.push(message));
    call.on('error', reject);
    call.on('end', () => resolve(responses));
  });
  await writeMessages(call, requests);
  call.end();
  return done;
}

// A hang (a status that never arrives) should fail in seconds, not at the global timeout.
describe('CoordinatorService over a real grpc-js server on loopback', { timeout: 30_000 }, () => {
  it.each(['generated', 'one-copy server', 'one-copy client'] as const)(
    'streams a 5.6 MB gradient up and 5.6 MB of weights down through Train, in chunks under the default 4 MiB limit (%s)',
    async (pairing) => {
      const gradient = Float32Array.from({ length: PARAMS }, (_, i) => Math.sin(i) * 1e-3);
      const bytes = encodeTensor(gradient);
      expect(bytes.byteLength).toBeGreaterThan(DEFAULT_GRPC_RECEIVE_LIMIT);

      const requests: TrainRequest[] = [
        { kind: { $case: 'attach', value: { workerId: 'w-1', weightsVersion: 7n } } },
        ...gradientMessages(meta(7n, 7n), bytes, {
          sampleCount: 32,
          loss: 0.5,
          correct: 20,
          computeSeconds: 0.1,
        }),
      ];
      const responses = await trainSession(requests, clients[pairing]);

      const assembler = createTensorAssembler({
        maxTensorBytes: PARAMS * 4,
        expectedFingerprint: FINGERPRINT,
      });
      let weights: AssembledTensor | undefined;
      for (const response of responses) {
        if (response.kind?.$case === 'weights')
          weights = assembler.push(response.kind.value.chunk!) ?? weights;
      }
      assembler.end();
      expect(responses.filter((r) => r.kind?.$case === 'weights')).toHaveLength(
        Math.ceil(bytes.byteLength / DEFAULT_CHUNK_BYTES),
      );
      expect(responses.at(-1)?.kind).toEqual({
        $case: 'stop',
        value: { reason: StopReason.JOB_DONE, message: 'done', rejoinAllowed: false },
      });
      expect(weights?.meta.version).toBe(8n);
      const received = decodeTensor(weights!.bytes, weights!.meta.dtype);
      const expected = nextWeights(gradient);
      expect(
        Buffer.from(received.buffer, received.byteOffset, received.byteLength).equals(
          Buffer.from(expected.buffer),
        ),
      ).toBe(true);
    },
  );

  it('raises the server HTTP/2 window with applyServerFlowControlWindow (grpc/grpc-node#3058 workaround)', async () => {
    const server = new Server(SERVER_OPTIONS);
    expect(applyServerFlowControlWindow(server)).toBe(false); // not bound yet: nothing to tune
    const address = await listen(CoordinatorServiceService, server);
    expect(applyServerFlowControlWindow(server)).toBe(true);
    // What a client is told in the server's SETTINGS frame.
    const session = http2.connect(`http://${address}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.initialWindowSize).toBe(FLOW_CONTROL_WINDOW_BYTES);
    } finally {
      session.close();
    }
    // And a full Train session still works through it.
    const client = new CoordinatorServiceClient(
      address,
      credentials.createInsecure(),
      CHANNEL_OPTIONS,
    );
    try {
      const gradient = new Float32Array(PARAMS).fill(0.25);
      const responses = await trainSession(
        gradientMessages(meta(1n, 1n), encodeTensor(gradient), {
          sampleCount: 1,
          loss: 0,
          correct: 0,
          computeSeconds: 0,
        }),
        client,
      );
      expect(responses.at(-1)?.kind?.$case).toBe('stop');
    } finally {
      client.close();
    }
  });

  it('refuses the same tensor as one unchunked message: the default limit is really in place', async () => {
    const bytes = Buffer.alloc(PARAMS * 4);
    const oneChunk: TrainRequest = {
      kind: {
        $case: 'gradient',
        value: {
          result: undefined,
          chunk: {
            transferId: 'whole',
            chunkIndex: 0,
            chunkCount: 1,
            byteOffset: 0,
            totalBytes: bytes.byteLength,
            meta: meta(7n, 7n),
            data: bytes,
            payloadCrc32: 0,
          },
        },
      },
    };
    const error = (await trainSession([oneChunk]).catch((e) => e)) as ServiceError;
    expect(error.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(fromGrpcStatus(error).message).toContain('lower the chunk size');
  });

  it('ends the stream with DATA_LOSS when a chunk goes missing, and the client gets DATA_CORRUPT back', async () => {
    const gradient = new Float32Array(PARAMS);
    const messages = [
      ...gradientMessages(meta(7n, 7n), encodeTensor(gradient), {
        sampleCount: 1,
        loss: 0,
        correct: 0,
        computeSeconds: 0,
      }),
    ];
    messages.splice(2, 1); // drop chunk 2
    const error = (await trainSession(messages).catch((e) => e)) as ServiceError;
    expect(error.code).toBe(status.DATA_LOSS);
    const converted = fromGrpcStatus(error);
    expect(converted.code).toBe('DATA_CORRUPT');
    expect(converted.message).toContain('expected chunk 2 of 6, found chunk 3: chunk 2 is missing');
  });

  it('refuses a Join from another protocol version with FAILED_PRECONDITION naming both versions', async () => {
    const join = (protocolVersion: number) =>
      new Promise<JoinResponse>((resolve, reject) =>
        client.join(
          {
            protocolVersion,
            workerName: 'old-box',
            backend: 'cpu',
            hostname: 'localhost',
            pid: process.pid,
            supportedDtypes: [DataType.FLOAT16],
            capabilities: [],
            previousWorkerId: '',
            maxReceiveMessageBytes: 0,
            softwareVersion: '0.1.0',
            pluginSha256: [],
            peerAddress: '',
          },
          (error, response) => (error ? reject(error) : resolve(response)),
        ),
      );
    expect((await join(PROTOCOL_VERSION)).weightsVersion).toBe(7n);
    const error = (await join(PROTOCOL_VERSION + 1).catch((e) => e)) as ServiceError;
    expect(error.code).toBe(status.FAILED_PRECONDITION);
    const converted = fromGrpcStatus(error);
    expect(converted.code).toBe('MISMATCH');
    expect(converted.message).toContain(
      `this process speaks version ${PROTOCOL_VERSION}, the worker old-box speaks version ${PROTOCOL_VERSION + 1}`,
    );
  });
});
