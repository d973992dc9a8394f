/**
 * How the cluster reports workers leaving: one that goes during the run is a departure (the text
 * reporter prints it, `worker_left` names why); the streams that close because the job ended
 * and the coordinator told every worker to stop are the job finishing, marked `job_ended`, and
 * the text reporter prints nothing for them. A real worker cancels its Train stream as soon as
 * it is told to stop; the fake stream here does the same.
 */
import { StopReason } from '@shardline/protocol';
import { describe, expect, it } from 'vitest';
import { createTextReporter } from '../src/reporter.js';
import { harness } from './clusterHarness.js';

/**
 * A cluster whose reporter is the text one, printing into `printed`, and whose workers cancel
 * their streams once told to stop; `left` is every departure the reporter was given, in full.
 */
function setUp() {
  const printed: string[] = [];
  const text = createTextReporter({
    stdout: { write: (s: string) => printed.push(s) },
    stderr: { write: (s: string) => printed.push(s) },
  });
  const { cluster, departures, attach } = harness({ reporter: text }, { cancelOnStop: true });
  return { cluster, left: departures, printed, attach };
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
