/**
 * The cluster's membership logic with fake timers and fake streams: waiting for --min-workers,
 * giving up after --wait-timeout, the heartbeat sweep, abort, and the refusals of the unary
 * handlers. No sockets, no processes: a regression here shows in milliseconds. The e2e tests
 * (resilience, badInput) run the same paths over real gRPC.
 */
import type { ServerDuplexStream, ServerUnaryCall, ServiceError } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { hasErrorCode, ShardlineError } from '@shardline/core';
import {
  Exchange,
  type GetStatusRequest,
  type GetStatusResponse,
  JobSpec,
  type JoinRequest,
  PROTOCOL_VERSION,
  StopReason,
  type TrainRequest,
  type TrainResponse,
} from '@shardline/protocol';
import { isRingWorker } from '@shardline/training';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  checkPeerAddress,
  heartbeatIntervalFor,
  JOIN_LIMITS,
  MAX_PENDING_JOINS,
  RING_CAPABILITY,
} from '../src/distributed/cluster.js';
import { FakeTrainStream, harness, job, layout } from './clusterHarness.js';

const stopsOf = (stream: FakeTrainStream) =>
  stream.written.flatMap((m) => (m.kind?.$case === 'stop' ? [m.kind.value] : []));

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('createCluster: waiting for members', () => {
  it('waits for --min-workers, with a notice every 5 s, and wakes as soon as the last attaches', async () => {
    const { cluster, logs, attach } = harness({ minWorkers: 2 });
    await attach('a');
    let members: readonly { name: string }[] | undefined;
    void cluster.members().then((m) => {
      members = m;
    });
    await vi.advanceTimersByTimeAsync(12_000);
    expect(members).toBeUndefined();
    const notices = logs.filter((l) => l.msg === 'waiting for workers');
    expect(notices).toHaveLength(3); // at 0, 5 and 10 s
    expect(notices[0]).toMatchObject({ attached: 1, min_workers: 2 });
    await attach('b');
    await vi.advanceTimersByTimeAsync(0);
    expect(members?.map((w) => w.name)).toEqual(['a', 'b']);
    cluster.close();
  });

  it('gives up after --wait-timeout with a message naming both counts and what to do', async () => {
    const { cluster, attach } = harness({ minWorkers: 3, waitTimeoutMs: 12_000 });
    await attach('a');
    const waiting = cluster.members().catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(11_000);
    await vi.advanceTimersByTimeAsync(1_000);
    const error = await waiting;
    expect(hasErrorCode(error, 'TIMEOUT')).toBe(true);
    expect((error as Error).message).toBe(
      'Waited 12 s for 3 workers (--min-workers), but only 1 attached. Start more shardline-worker processes ' +
        'pointing at this coordinator, or lower --min-workers; raise --wait-timeout to wait longer.',
    );
    cluster.close();
  });

  it('rejects a waiting members() call when the cluster aborts, and stops waiting on a signal', async () => {
    const { cluster } = harness({ minWorkers: 1 });
    const waiting = cluster.members().catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(100);
    cluster.abort(new ShardlineError('INTERNAL', 'local-1 died'));
    expect(((await waiting) as Error).message).toBe('local-1 died');

    const other = harness({ minWorkers: 1 });
    const controller = new AbortController();
    const cancelled = other.cluster.members(controller.signal).catch((e: unknown) => e);
    controller.abort();
    expect(hasErrorCode(await cancelled, 'CANCELLED')).toBe(true);
    cluster.close();
    other.cluster.close();
  });
});

describe('createCluster: the heartbeat sweep', () => {
  it('asks for a heartbeat every 2 s, or 4 per --worker-timeout when that is shorter', () => {
    // A heartbeat delayed by an evaluation batch must still arrive within --worker-timeout.
    expect(heartbeatIntervalFor(10_000)).toBe(2000);
    expect(heartbeatIntervalFor(2_000)).toBe(500);
    expect(heartbeatIntervalFor(0)).toBe(2000);
    expect(heartbeatIntervalFor(undefined)).toBe(2000);
  });

  it('drops an idle worker silent past --worker-timeout and keeps one that sends heartbeats', async () => {
    const { cluster, left, attach } = harness({ workerTimeoutMs: 5_000 });
    const quiet = await attach('quiet');
    const chatty = await attach('chatty');
    for (let t = 0; t < 8; t++) {
      chatty.send({ kind: { $case: 'heartbeat', value: { step: 0n, unixTimeMs: 0n } } });
      await vi.advanceTimersByTimeAsync(1_000);
    }
    expect(cluster.attached().map((w) => w.name)).toEqual(['chatty']);
    expect(left).toEqual([
      {
        worker: 'quiet',
        reason: expect.stringMatching(/^no heartbeat for 6 s \(--worker-timeout 5\)$/),
      },
    ]);
    // The dropped worker was told why, with EVICTED, and its stream ended.
    expect(stopsOf(quiet)).toEqual([
      expect.objectContaining({ reason: StopReason.EVICTED, message: left[0]!.reason }),
    ]);
    expect(quiet.writableEnded).toBe(true);
    expect(stopsOf(chatty)).toEqual([]);
    cluster.close();
  });

  it('leaves a busy worker alone: it cannot send heartbeats while it computes', async () => {
    const { cluster, left, attach } = harness({ workerTimeoutMs: 5_000 });
    await attach('busy');
    const [worker] = await cluster.members();
    const share = worker!
      .computeShare(
        { epoch: 0, step: 0, stepInEpoch: 0, rank: 0, worldSize: 1, samples: 8 },
        { version: 0, params: new Float32Array(layout.size) },
      )
      .catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(left).toEqual([]);
    expect(cluster.attached()).toHaveLength(1);
    // Leaving fails the share it owed, as a lost connection.
    cluster.drop?.(worker!, 'test over');
    expect(hasErrorCode(await share, 'CONNECTION_LOST')).toBe(true);
    cluster.close();
  });

  it('drops a worker silent past --worker-timeout while it owes an evaluation, failing the evaluation', async () => {
    // An evaluation has no deadline of its own: a real worker heartbeats between its batches,
    // so one that says nothing (stuck, or a client that ignores the request) must not hang the job.
    const { cluster, left, attach } = harness({ workerTimeoutMs: 5_000 });
    await attach('evaluating');
    const [worker] = await cluster.members();
    const evaluation = worker!
      .evaluate({ start: 0, end: 4 }, { version: 0, params: new Float32Array(layout.size) })
      .catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(7_000);
    expect(left).toEqual([
      {
        worker: 'evaluating',
        reason: expect.stringMatching(/^no heartbeat for 6 s \(--worker-timeout 5\)$/),
      },
    ]);
    expect(hasErrorCode(await evaluation, 'CONNECTION_LOST')).toBe(true);
    cluster.close();
  });

  it('keeps an evaluating worker that heartbeats between its batches', async () => {
    const { cluster, left, attach } = harness({ workerTimeoutMs: 5_000 });
    const evaluating = await attach('evaluating');
    const [worker] = await cluster.members();
    void worker!
      .evaluate({ start: 0, end: 4 }, { version: 0, params: new Float32Array(layout.size) })
      .catch(() => {});
    for (let t = 0; t < 20; t++) {
      evaluating.send({ kind: { $case: 'heartbeat', value: { step: 0n, unixTimeMs: 0n } } });
      await vi.advanceTimersByTimeAsync(1_000);
    }
    expect(left).toEqual([]);
    cluster.drop?.(worker!, 'test over');
    cluster.close();
  });
});

describe('createCluster: a worker that left', () => {
  it('rejects further work with CONNECTION_LOST (a promise, never a synchronous throw)', async () => {
    const { cluster, attach } = harness();
    await attach('gone');
    const [worker] = await cluster.members();
    cluster.drop?.(worker!, 'test over');
    // The trainer hands out shares with members.map(...): a throw there would fail the whole
    // step instead of dropping one member.
    const share = worker!.computeShare(
      { epoch: 0, step: 1, stepInEpoch: 1, rank: 0, worldSize: 1, samples: 8 },
      { version: 1, params: new Float32Array(layout.size) },
    );
    expect(hasErrorCode(await share.catch((e: unknown) => e), 'CONNECTION_LOST')).toBe(true);
    const evaluation = worker!.evaluate(
      { start: 0, end: 4 },
      { version: 1, params: new Float32Array(layout.size) },
    );
    expect(hasErrorCode(await evaluation.catch((e: unknown) => e), 'CONNECTION_LOST')).toBe(true);
    cluster.close();
  });
});

describe('createCluster: joins that never attach', () => {
  it('forgets them after --worker-timeout; one that attaches later is told to join again', async () => {
    const { cluster, logs, join } = harness({ workerTimeoutMs: 5_000 });
    const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => join(`idle-${i}`)));
    const listed = () =>
      new Promise<GetStatusResponse>((resolve, reject) =>
        cluster.service.getStatus(
          { request: {} } as ServerUnaryCall<GetStatusRequest, GetStatusResponse>,
          (error, response) => (error ? reject(error) : resolve(response!)),
        ),
      );
    expect((await listed()).workers).toHaveLength(200);
    await vi.advanceTimersByTimeAsync(7_000);
    expect((await listed()).workers).toEqual([]);
    expect(logs).toContainEqual(
      expect.objectContaining({ msg: 'forgot joins that never attached', joins: 200 }),
    );
    const late = new FakeTrainStream();
    cluster.service.train(late as unknown as ServerDuplexStream<TrainRequest, TrainResponse>);
    late.send({
      kind: { $case: 'attach', value: { workerId: ids[0]!, weightsVersion: undefined } },
    });
    expect(late.status).toMatchObject({ code: status.NOT_FOUND });
    cluster.close();
  });

  it(`refuses joins beyond ${MAX_PENDING_JOINS} pending ones`, async () => {
    const { cluster, join } = harness({ workerTimeoutMs: 60_000 });
    for (let i = 0; i < MAX_PENDING_JOINS; i++) await join(`w-${i}`);
    const error = (await join('one-too-many').catch((e: unknown) => e)) as ServiceError;
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toContain(
      `already has ${MAX_PENDING_JOINS} joins that have not attached (at most ${MAX_PENDING_JOINS})`,
    );
    cluster.close();
  });

  it('refuses a join whose strings are longer than their bounds, naming the field', async () => {
    const { cluster, join } = harness();
    const cases: Array<[Partial<JoinRequest>, string]> = [
      [
        { workerName: 'x'.repeat(3_000_000) },
        "The join's worker_name has 3000000 characters, expected at most 128.",
      ],
      [
        { hostname: 'h'.repeat(256) },
        "The join's hostname has 256 characters, expected at most 255.",
      ],
      [{ backend: 'b'.repeat(65) }, "The join's backend has 65 characters"],
      [
        { capabilities: Array.from({ length: 33 }, () => 'c') },
        "The join's capabilities has 33 entries",
      ],
      [{ capabilities: ['c'.repeat(65)] }, "The join's capability has 65 characters"],
    ];
    for (const [request, message] of cases) {
      const error = (await join('w', request).catch((e: unknown) => e)) as ServiceError;
      expect(error.code).toBe(status.INVALID_ARGUMENT);
      expect(error.details).toContain(message);
    }
    expect(await join('w'.repeat(128))).toBeTruthy();
    cluster.close();
  });
});

describe('createCluster: refusals', () => {
  it('refuses a Join beyond --max-workers with INVALID_ARGUMENT saying which flag to raise', async () => {
    const { cluster, join } = harness({ maxWorkers: 1 });
    await join('a');
    const error = (await join('b').catch((e: unknown) => e)) as ServiceError;
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toBe(
      'The job already has 1 workers, its maximum (--max-workers 1). Start this worker for another job, or raise --max-workers.',
    );
    cluster.close();
  });

  it('refuses a Join from another protocol version with FAILED_PRECONDITION', async () => {
    const { cluster, join } = harness();
    const error = (await join('old', { protocolVersion: PROTOCOL_VERSION + 1 }).catch(
      (e: unknown) => e,
    )) as ServiceError;
    expect(error.code).toBe(status.FAILED_PRECONDITION);
    expect(error.details).toContain('protocol version mismatch');
    cluster.close();
  });

  it('ends a Train stream whose first message is not a known attach', async () => {
    const { cluster } = harness();
    const unknown = new FakeTrainStream();
    cluster.service.train(unknown as unknown as ServerDuplexStream<TrainRequest, TrainResponse>);
    unknown.send({
      kind: { $case: 'attach', value: { workerId: 'w-9', weightsVersion: undefined } },
    });
    expect(unknown.status).toMatchObject({
      code: status.NOT_FOUND,
      details:
        'Unknown worker id w-9: call Join first (a join that does not attach within --worker-timeout is forgotten).',
    });
    const early = new FakeTrainStream();
    cluster.service.train(early as unknown as ServerDuplexStream<TrainRequest, TrainResponse>);
    early.send({ kind: { $case: 'heartbeat', value: { step: 0n, unixTimeMs: 0n } } });
    expect(early.status).toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: 'The first message on a Train stream must be attach.',
    });
    expect(cluster.attached()).toEqual([]);
    cluster.close();
  });
});

describe('createCluster: refusals reach onRefusal, by reason', () => {
  it('labels what was refused: the join check that failed, the attach, a message it should not have sent', async () => {
    const refusals: string[] = [];
    const { cluster, join, attach } = harness({
      maxWorkers: 2,
      onRefusal: (reason) => refusals.push(reason),
    });
    await join('old', { protocolVersion: PROTOCOL_VERSION + 1 }).catch(() => {});
    await join('long', { hostname: 'h'.repeat(JOIN_LIMITS.hostname + 1) }).catch(() => {});
    const star = await attach('a');
    await join('b');
    await join('c').catch(() => {});
    const unknown = new FakeTrainStream();
    cluster.service.train(unknown as unknown as ServerDuplexStream<TrainRequest, TrainResponse>);
    unknown.send({
      kind: { $case: 'attach', value: { workerId: 'w-9', weightsVersion: undefined } },
    });
    const early = new FakeTrainStream();
    cluster.service.train(early as unknown as ServerDuplexStream<TrainRequest, TrainResponse>);
    early.send({ kind: { $case: 'heartbeat', value: { step: 0n, unixTimeMs: 0n } } });
    // A ring message in a star job: refused, and the stream ends for it.
    star.send({
      kind: {
        $case: 'state',
        value: { requestId: 1n, optimizer: undefined, chunk: undefined },
      },
    });
    expect(star.status).toBeDefined();
    expect(refusals).toEqual([
      'protocol_version',
      'join_limits',
      'max_workers',
      'unknown_worker',
      'bad_attach',
      'unexpected_message',
    ]);
    cluster.close();
  });

  it("does not count a worker's own error report as a refusal", async () => {
    const refusals: string[] = [];
    const { cluster, attach } = harness({ onRefusal: (reason) => refusals.push(reason) });
    const stream = await attach('a');
    stream.send({
      kind: {
        $case: 'error',
        value: { code: 'INTERNAL', message: 'out of memory', step: 0n, fatal: true },
      },
    });
    expect(refusals).toEqual([]);
    cluster.close();
  });
});

describe('createCluster: a ring job', () => {
  const ringJob = JobSpec.fromPartial({ ...job, exchange: Exchange.RING });
  const ringMember = (peerAddress: string) => ({
    peerAddress,
    capabilities: [RING_CAPABILITY],
  });

  it('refuses a worker without a peer endpoint or the capability, saying which flag serves one', async () => {
    const { cluster, join, logs } = harness({ job: ringJob });
    const cases: Array<[Partial<JoinRequest>, string]> = [
      [{}, `it did not announce the capability "${RING_CAPABILITY}" and serves no peer endpoint`],
      [{ peerAddress: 'h:7000' }, `it did not announce the capability "${RING_CAPABILITY}".`],
      [
        { capabilities: [RING_CAPABILITY] },
        'it serves no peer endpoint (its join carries no peer_address)',
      ],
    ];
    for (const [request, found] of cases) {
      const error = (await join('plain', request).catch((e: unknown) => e)) as ServiceError;
      expect(error.code).toBe(status.FAILED_PRECONDITION);
      expect(error.details).toContain(
        'This job exchanges gradients in a ring among the workers (--exchange ring), so every worker must serve a peer endpoint, but ',
      );
      expect(error.details).toContain(found);
      expect(error.details).toContain('Start the worker with --peer-listen host:port');
      expect(error.details).toContain(
        'a worker using TLS serves one only with --tls-cert, --tls-key and --tls-ca',
      );
    }
    expect(logs.filter((l) => l.msg === 'refused a worker')).toHaveLength(3);
    cluster.close();
  });

  it('admits a ring member, keeps its peer address and makes it a ring worker', async () => {
    const { cluster, attach } = harness({ job: ringJob });
    await attach('a', ringMember('10.0.0.2:7100'));
    await attach('b', ringMember('[fd00::2]:7100'));
    const members = await cluster.members();
    expect(members.map((w) => isRingWorker(w))).toEqual([true, true]);
    expect(cluster.attached().map((w) => w.peerAddress)).toEqual([
      '10.0.0.2:7100',
      '[fd00::2]:7100',
    ]);
    cluster.close();
  });

  it('refuses a peer address its peers could not dial, with INVALID_ARGUMENT', async () => {
    const { cluster, join } = harness({ job: ringJob });
    const cases: Array<[string, string]> = [
      ['worker-3', 'is not host:port'],
      ['host:0', 'has port 0, expected 1 to 65535'],
      ['host:65536', 'has port 65536'],
      ['0.0.0.0:7000', 'is the unspecified address'],
      ['[::]:7000', 'is the unspecified address'],
      ['a b:7000', 'is not host:port'],
    ];
    for (const [address, problem] of cases) {
      const error = (await join('w', ringMember(address)).catch((e: unknown) => e)) as ServiceError;
      expect(error.code, address).toBe(status.INVALID_ARGUMENT);
      expect(error.details).toContain(
        `The join's peer_address ${JSON.stringify(address)} ${problem}`,
      );
      expect(error.details).toContain('Give the worker --peer-advertise host:port');
    }
    expect(() => checkPeerAddress('gpu-box-2.lan:7100')).not.toThrow();
    cluster.close();
  });

  it('bounds the peer address in any job, and ignores it in a star job', async () => {
    const { cluster, join, attach } = harness();
    const long = `${'h'.repeat(JOIN_LIMITS.peerAddress)}:1`;
    const error = (await join('w', { peerAddress: long }).catch((e: unknown) => e)) as ServiceError;
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toContain(
      `The join's peer_address has ${long.length} characters, expected at most ${JOIN_LIMITS.peerAddress}.`,
    );
    await attach('star', ringMember('h:7000'));
    const [worker] = await cluster.members();
    expect(isRingWorker(worker!)).toBe(false);
    cluster.close();
  });
});
