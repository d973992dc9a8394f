/**
 * How the cluster reports workers leaving: one that goes during the run is a departure (the text
 * reporter prints it, `worker_left` names why); the streams that close because the job ended
 * and the coordinator told every worker to stop are the job finishing, marked `job_ended`, and
 * the text reporter prints nothing for them. A real worker cancels its Train stream as soon as
 * it is told to stop; the fake stream here does the same.
 */
import { EventEmitter } from 'node:events';
import type { ServerDuplexStream, ServerUnaryCall } from '@grpc/grpc-js';
import { createLogger, type ParamLayout } from '@shardline/core';
import {
  DataType,
  DEFAULT_CHUNK_BYTES,
  JobSpec,
  JoinRequest,
  type JoinResponse,
  PROTOCOL_VERSION,
  StopReason,
  type TrainRequest,
  type TrainResponse,
} from '@shardline/protocol';
import { describe, expect, it } from 'vitest';
import { createCluster } from '../src/distributed/cluster.js';
import { createTextReporter, type Reporter, type WorkerLeftInfo } from '../src/reporter.js';

const layout: ParamLayout = { slots: [], size: 4, fingerprint: '00000000000000bb' };
const job = JobSpec.fromPartial({
  jobId: 'job-leaving',
  modelName: 'mlp',
  datasetName: 'fashion-mnist',
  globalBatchSize: 8,
  epochs: 1,
  gradientDtype: DataType.FLOAT32,
  weightsDtype: DataType.FLOAT32,
  maxChunkBytes: DEFAULT_CHUNK_BYTES,
  layoutFingerprint: layout.fingerprint,
  parameterCount: layout.size,
});

/** A Train stream whose worker cancels it once told to stop, as shardline-worker does. */
class CancellingStream extends EventEmitter {
  writableEnded = false;
  destroyed = false;
  write(message: TrainResponse): boolean {
    if (message.kind?.$case === 'stop') queueMicrotask(() => this.emit('cancelled'));
    return true;
  }
  end(): void {
    this.writableEnded = true;
  }
  getPeer(): string {
    return '127.0.0.1:50001';
  }
}

function setUp() {
  const left: WorkerLeftInfo[] = [];
  const printed: string[] = [];
  const text = createTextReporter({
    stdout: { write: (s: string) => printed.push(s) },
    stderr: { write: (s: string) => printed.push(s) },
  });
  const reporter: Reporter = {
    ...text,
    workerLeft(info) {
      left.push(info);
      text.workerLeft(info);
    },
  };
  const cluster = createCluster({
    job,
    layout,
    minWorkers: 1,
    classNames: ['a', 'b', 'c', 'd'],
    reporter,
    logger: createLogger({ level: 'silent', sink: { write() {} } }),
  });
  const attach = async (name: string) => {
    const workerId = await new Promise<string>((resolve, reject) =>
      cluster.service.join(
        {
          request: JoinRequest.fromPartial({ protocolVersion: PROTOCOL_VERSION, workerName: name }),
        } as ServerUnaryCall<JoinRequest, JoinResponse>,
        (error, response) => (error ? reject(error) : resolve(response!.workerId)),
      ),
    );
    const stream = new CancellingStream();
    cluster.service.train(stream as unknown as ServerDuplexStream<TrainRequest, TrainResponse>);
    stream.emit('data', {
      kind: { $case: 'attach', value: { workerId, weightsVersion: undefined } },
    } satisfies TrainRequest);
    return stream;
  };
  return { cluster, left, printed, attach };
}

describe('workers leaving', () => {
  it('reports a worker that cancels its stream mid-run as gone, with why', async () => {
    const { cluster, left, printed, attach } = setUp();
    const quitter = await attach('quitter');
    await attach('stayer');
    quitter.emit('cancelled');
    expect(left).toEqual([
      expect.objectContaining({ worker: 'quitter', reason: 'it cancelled its stream', workers: 1 }),
    ]);
    expect(left[0]).not.toHaveProperty('job_ended');
    expect(printed.join('')).toContain(
      'Worker quitter left: it cancelled its stream; 1 worker remaining.',
    );
    cluster.close();
  });

  it('marks the streams that close after the job told every worker to stop as the job ending, and prints no leave for them', async () => {
    const { cluster, left, printed, attach } = setUp();
    await attach('local-1');
    await attach('local-2');
    await cluster.stopAll(StopReason.JOB_DONE, 'Training finished.');
    expect(left).toEqual([
      expect.objectContaining({
        worker: 'local-1',
        reason: 'told to stop: Training finished',
        job_ended: true,
      }),
      expect.objectContaining({
        worker: 'local-2',
        reason: 'told to stop: Training finished',
        job_ended: true,
      }),
    ]);
    expect(printed.join('')).not.toMatch(/left|cancelled|remaining/);
    cluster.close();
  });
});
