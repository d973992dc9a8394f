import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import {
  CHANNEL_OPTIONS,
  CoordinatorClient,
  DataType,
  encodeTensor,
  gradientMessages,
  type JobSpec,
  type JoinResponse,
  PROTOCOL_VERSION,
  type StepAssignment,
  type TensorChunk,
  type TrainRequest,
  type TrainResponse,
  writeMessages,
} from '@shardline/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { joinRequest } from './joinRequest.js';
import { cliPath, runCli } from './runCli.js';

// Each case joins a real coordinator as a rogue worker, misbehaves on its first assignment, and
// must get a clear gRPC status, while the coordinator keeps training with its honest local
// worker. The model is unaffected: the run ends bit-identical to the same run without rogues.

let out: string;
let coordinator: ChildProcess;
let address = '';
const events: Array<Record<string, unknown>> = [];
let finished: Promise<number | null>;

const flags = [
  'train',
  '--model',
  'fast-cnn',
  '--epochs',
  '1',
  '--batch-size',
  '32',
  '--limit-train',
  '6400',
  '--limit-test',
  '100',
  '--local-workers',
  '1',
  '--min-workers',
  '1',
  '--seed',
  '11',
  '--log-format',
  'json',
  '--log-level',
  'error',
];

beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-bad-input-'));
  coordinator = spawn(
    process.execPath,
    [cliPath, ...flags, '--listen', '127.0.0.1:0', '--out', join(out, 'attacked')],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  finished = new Promise((resolve) => coordinator.on('close', resolve));
  const lines = createInterface({ input: coordinator.stdout! });
  await new Promise<void>((resolve) => {
    lines.on('line', (line) => {
      const event = JSON.parse(line) as Record<string, unknown>;
      events.push(event);
      if (event.event === 'started') address = String(event.listen);
      if (event.event === 'worker_joined') resolve();
    });
  });
});

afterAll(async () => {
  if (coordinator.exitCode === null) coordinator.kill('SIGKILL');
  await rm(out, { recursive: true, force: true });
});

function client(options: Record<string, number> = {}): InstanceType<typeof CoordinatorClient> {
  return new CoordinatorClient(address, credentials.createInsecure(), {
    ...CHANNEL_OPTIONS,
    ...options,
  });
}

function join_(
  c: InstanceType<typeof CoordinatorClient>,
  protocolVersion = PROTOCOL_VERSION,
  workerName = 'rogue',
): Promise<JoinResponse> {
  return new Promise((resolve, reject) =>
    c.join(joinRequest({ protocolVersion, workerName }), (error, response) =>
      error ? reject(error) : resolve(response),
    ),
  );
}

/** Joins, attaches, waits for the first assignment, lets `misbehave` write, and returns the status the stream ends with. */
async function rogue(
  misbehave: (
    call: ReturnType<InstanceType<typeof CoordinatorClient>['train']>,
    job: JobSpec,
    a: StepAssignment,
  ) => Promise<void> | void,
  { early = false, clientOptions = {} as Record<string, number> } = {},
): Promise<ServiceError> {
  const c = client(clientOptions);
  try {
    const joined = await join_(c);
    const call = c.train();
    const ended = new Promise<ServiceError>((resolve) => {
      call.on('error', (e: ServiceError) => resolve(e));
      call.on('status', (s) => {
        if (s.code === status.OK)
          resolve(Object.assign(new Error('ended with OK'), s) as unknown as ServiceError);
      });
    });
    call.write({
      kind: { $case: 'attach', value: { workerId: joined.workerId, weightsVersion: undefined } },
    } satisfies TrainRequest);
    if (early) {
      await misbehave(call, joined.job!, {} as StepAssignment);
    } else {
      const assignment = await new Promise<StepAssignment>((resolve) =>
        call.on('data', (m: TrainResponse) => {
          if (m.kind?.$case === 'assignment') resolve(m.kind.value);
        }),
      );
      await misbehave(call, joined.job!, assignment);
    }
    return await ended;
  } finally {
    c.close();
  }
}

const meta = (
  job: JobSpec,
  a: StepAssignment,
  over: Partial<{ dtype: DataType; elementCount: number; fingerprint: string; step: bigint }> = {},
) => {
  const elementCount = over.elementCount ?? job.parameterCount;
  return {
    dtype: over.dtype ?? DataType.FLOAT32,
    shape: [elementCount],
    elementCount,
    layoutFingerprint: over.fingerprint ?? job.layoutFingerprint,
    version: a.weightsVersion,
    step: over.step ?? a.step,
  };
};
const result = { sampleCount: 16, loss: 1, correct: 1, computeSeconds: 0.1 };
const send = (
  call: Parameters<Parameters<typeof rogue>[0]>[0],
  m: ReturnType<typeof meta>,
  values: Float32Array,
  chunk = 1024 * 1024,
) => writeMessages(call, gradientMessages(m, encodeTensor(values, m.dtype), result, chunk));

describe('bad input from a worker', () => {
  it('a gradient of the wrong length is refused', async () => {
    const e = await rogue((call, job, a) =>
      send(
        call,
        meta(job, a, { elementCount: job.parameterCount - 1 }),
        new Float32Array(job.parameterCount - 1),
      ),
    );
    expect(e.code).not.toBe(status.OK);
    expect(e.details).toMatch(/element/i);
  });

  it('a gradient in another dtype is refused', async () => {
    const e = await rogue((call, job, a) =>
      send(call, meta(job, a, { dtype: DataType.FLOAT16 }), new Float32Array(job.parameterCount)),
    );
    expect(e.code).not.toBe(status.OK);
    expect(e.details).toMatch(/float16|dtype/i);
  });

  it('a gradient for another model layout is refused', async () => {
    const e = await rogue((call, job, a) =>
      send(
        call,
        meta(job, a, { fingerprint: '0123456789abcdef' }),
        new Float32Array(job.parameterCount),
      ),
    );
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.details).toMatch(/0123456789abcdef/);
  });

  it('NaN or Inf in a gradient is rejected and the worker told why', async () => {
    const e = await rogue((call, job, a) => {
      const g = new Float32Array(job.parameterCount);
      g[7] = Number.NaN;
      return send(call, meta(job, a), g);
    });
    expect(e.code).toBe(status.OUT_OF_RANGE);
    expect(e.details).toMatch(/NaN at index 7: expected finite numbers/);
  });

  it('a gradient for a stale or a future step is refused', async () => {
    for (const delta of [-1n, 5n]) {
      const e = await rogue((call, job, a) =>
        send(call, meta(job, a, { step: a.step + delta }), new Float32Array(job.parameterCount)),
      );
      expect(e.code).toBe(status.FAILED_PRECONDITION);
      expect(e.details).toMatch(/expected step/);
    }
  });

  it('a gradient nobody asked for is refused', async () => {
    const e = await rogue(
      (call, job) =>
        send(
          call,
          meta(job, { step: 0n, weightsVersion: 0n } as StepAssignment),
          new Float32Array(job.parameterCount),
        ),
      { early: true },
    );
    // Usually nothing is pending yet: "no step asked for". Under load the coordinator may assign
    // the freshly attached rogue a step before its gradient lands, and then the same gradient is
    // refused as one for the wrong step. Either way it is refused and never averaged.
    if (e.code === status.FAILED_PRECONDITION) expect(e.details).toMatch(/expected step/);
    else {
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.details).toMatch(/no step asked for/);
    }
  });

  it('duplicated and truncated chunk sequences are refused', async () => {
    const chunks = (job: JobSpec, a: StepAssignment) => [
      ...gradientMessages(
        meta(job, a),
        encodeTensor(new Float32Array(job.parameterCount)),
        result,
        256 * 1024,
      ),
    ];
    const duplicated = await rogue((call, job, a) => {
      const m = chunks(job, a);
      return writeMessages(call, [m[0]!, m[0]!]);
    });
    expect(duplicated.code).toBe(status.DATA_LOSS);
    const truncated = await rogue((call, job, a) => {
      // Two chunks of one transfer, then a new transfer: the first one never completed.
      const first = chunks(job, a);
      const second = chunks(job, a);
      return writeMessages(call, [first[0]!, first[1]!, second[0]!]);
    });
    expect(truncated.code).toBe(status.DATA_LOSS);
  });

  it('a message over the size limit is refused', async () => {
    const e = await rogue(
      (call, job, a) => {
        const chunk: TensorChunk = {
          transferId: 'huge',
          chunkIndex: 0,
          chunkCount: 1,
          byteOffset: 0,
          totalBytes: 6 * 1024 * 1024,
          meta: meta(job, a),
          data: Buffer.alloc(6 * 1024 * 1024),
          payloadCrc32: 0,
        };
        call.write({
          kind: { $case: 'gradient', value: { result, chunk } },
        } satisfies TrainRequest);
      },
      { clientOptions: { 'grpc.max_send_message_length': 64 * 1024 * 1024 } },
    );
    // Refused by the coordinator's receive limit, not by this client's send limit.
    expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(e.details).toMatch(/Received message larger than max/);
  });

  // The numbers beside the tensor: the coordinator knows the share it assigned, so every number
  // that cannot be true of it is refused before the tensor is assembled.
  const lie = (numbers: Partial<typeof result>) =>
    rogue((call, job, a) => {
      const m = meta(job, a);
      const values = new Float32Array(job.parameterCount);
      return writeMessages(
        call,
        gradientMessages(m, encodeTensor(values, m.dtype), { ...result, ...numbers }, 1024 * 1024),
      );
    });

  it('a sample count that is not the size of the assigned share is refused', async () => {
    const e = await lie({ sampleCount: 4_294_967_295 });
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toMatch(
      /^Worker rogue reported sample_count 4294967295 for step \d+, expected 16, the size of its share \(rank [01] of 2\)\. The report was rejected/,
    );
  });

  it('more correct predictions than samples are refused', async () => {
    const e = await lie({ correct: 17 });
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toMatch(/reported correct 17 for step \d+, expected an integer from 0 to 16/);
  });

  it('a negative or non-finite loss is refused', async () => {
    for (const loss of [-1, Number.NaN]) {
      const e = await lie({ loss });
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.details).toContain(`reported loss ${loss} for step`);
      expect(e.details).toContain('expected a finite number, 0 or more');
    }
  });

  it('negative compute seconds are refused', async () => {
    const e = await lie({ computeSeconds: -5 });
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toMatch(/reported compute_seconds -5 for step \d+/);
  });

  it('a join with a 3 MB name is refused, naming the field and the bound', async () => {
    const c = client();
    const e = (await join_(c, PROTOCOL_VERSION, 'x'.repeat(3_000_000)).catch(
      (error: unknown) => error,
    )) as ServiceError;
    c.close();
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toContain(
      "The join's worker_name has 3000000 characters, expected at most 128.",
    );
  });

  it('a worker of another protocol version is refused, naming both versions', async () => {
    const c = client();
    const e = (await join_(c, PROTOCOL_VERSION + 98).catch(
      (error: unknown) => error,
    )) as ServiceError;
    c.close();
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.details).toContain(String(PROTOCOL_VERSION + 98));
    expect(e.details).toContain(String(PROTOCOL_VERSION));
  });

  it('an unknown worker id is refused', async () => {
    const c = client();
    const call = c.train();
    const e = await new Promise<ServiceError>((resolve) => {
      call.on('error', resolve);
      call.write({
        kind: { $case: 'attach', value: { workerId: 'not-a-worker', weightsVersion: undefined } },
      } satisfies TrainRequest);
    });
    c.close();
    expect(e.code).toBe(status.NOT_FOUND);
    expect(e.details).toMatch(/Unknown worker id not-a-worker: call Join first/);
  });

  it('garbage bytes on the port are dropped without harm', async () => {
    const [host, port] = [
      address.slice(0, address.lastIndexOf(':')),
      Number(address.slice(address.lastIndexOf(':') + 1)),
    ];
    await new Promise<void>((resolve) => {
      const socket = connect(port, host, () => socket.end(randomBytes(4096)));
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      socket.resume();
    });
  });

  it('keeps training through all of it, and the model is unaffected', {
    timeout: 300_000,
  }, async () => {
    expect(await finished).toBe(0);
    expect(events.at(-1)).toMatchObject({ event: 'done', step: 200 });
    // Every rogue was dropped as soon as it misbehaved, none by the --worker-timeout deadline.
    const dropped = events.filter(
      (e) => e.event === 'worker_left' && String(e.reason).includes('did not return'),
    );
    expect(dropped).toEqual([]);
    const calm = await runCli([...flags, '--listen', '127.0.0.1:0', '--out', join(out, 'calm')]);
    expect(calm.code, calm.stderr).toBe(0);
    const weights = (dir: string) => readFile(join(out, dir, 'model', 'weights.bin'));
    expect(Buffer.compare(await weights('calm'), await weights('attacked'))).toBe(0);
    // The same test accuracy, exactly: no lie reached the evaluation either.
    const calmDone = calm.events().find((e) => e.event === 'done');
    expect(events.at(-1)?.test_accuracy).toBe(calmDone?.test_accuracy);
    // Every refused report is counted in the run summary: five lies about numbers (the loss case
    // lies twice) and one NaN gradient.
    const summary = JSON.parse(await readFile(join(out, 'attacked', 'summary.json'), 'utf8')) as {
      rejectedReports: Record<string, number>;
    };
    expect(summary.rejectedReports).toEqual({ 'non-finite gradient': 1, report: 5, evaluation: 0 });
  });
});
