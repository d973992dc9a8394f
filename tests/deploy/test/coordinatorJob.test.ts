/**
 * deploy/bin/shardline-coordinator-job, the wrapper that Kubernetes and systemd restart: it must
 * add --resume exactly when --out holds a checkpoint, do nothing for a finished run, pass
 * SIGTERM on once, and turn a clean stop before the end into status 75. Here against a stand-in
 * coordinator that records what it was given; coordinatorJob.e2e.test.ts runs the real CLI.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWrapper } from './wrapperRun.js';

let dir: string;
let fake: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shardline-job-'));
  // A stand-in coordinator: records its arguments and the signals it gets, then behaves as
  // FAKE_MODE says.
  fake = join(dir, 'fake-coordinator.mjs');
  writeFileSync(
    fake,
    `#!${process.execPath}
import { appendFileSync, writeFileSync } from 'node:fs';
const log = (entry) => appendFileSync(process.env.FAKE_LOG, JSON.stringify(entry) + '\\n');
log({ argv: process.argv.slice(2) });
const args = process.argv.slice(2);
const out = args.find((a) => a.startsWith('--out='))?.slice(6) ?? args[args.indexOf('--out') + 1];
const mode = process.env.FAKE_MODE;
if (mode === 'finish') { writeFileSync(out + '/summary.json', '{}'); process.exit(0); }
if (mode === 'fail') process.exit(3);
// 'wait': run until SIGTERM, like a coordinator mid-job; count every signal.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log({ signal });
    if (signal === 'SIGTERM') setTimeout(() => process.exit(0), 200);
  });
}
log({ ready: true });
setInterval(() => {}, 1000);
`,
  );
  chmodSync(fake, 0o755);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const entries = (log: string): Array<Record<string, unknown>> =>
  existsSync(log)
    ? readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];

async function until(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let case_ = 0;
/** A fresh --out and log for one case. */
function fresh(): { out: string; log: string; env: NodeJS.ProcessEnv } {
  case_++;
  const out = join(dir, `out-${case_}`);
  mkdirSync(out);
  const log = join(dir, `log-${case_}.jsonl`);
  return { out, log, env: { SHARDLINE_COORDINATOR_BIN: fake, FAKE_LOG: log } };
}

describe('shardline-coordinator-job with a stand-in coordinator', () => {
  it('runs `train` with the flags as given, without --resume, on a fresh --out', async () => {
    const { out, log, env } = fresh();
    const run = startWrapper([`--out=${out}`, '--min-workers=3'], { ...env, FAKE_MODE: 'finish' });
    expect((await run.exit).code).toBe(0);
    expect(entries(log)[0]).toEqual({ argv: ['train', `--out=${out}`, '--min-workers=3'] });
  });

  it('adds --resume when --out holds a checkpoint, and only a complete one', async () => {
    const { out, log, env } = fresh();
    // A folder without state.json is not a checkpoint (they are renamed into place whole).
    mkdirSync(join(out, 'checkpoints', 'step-000000003'), { recursive: true });
    let run = startWrapper(['--out', out], { ...env, FAKE_MODE: 'fail' });
    expect((await run.exit).code).toBe(3);
    expect(entries(log)[0]).toEqual({ argv: ['train', '--out', out] });

    mkdirSync(join(out, 'checkpoints', 'step-000000004'));
    writeFileSync(join(out, 'checkpoints', 'step-000000004', 'state.json'), '{}');
    run = startWrapper(['--out', out], { ...env, FAKE_MODE: 'finish' });
    const result = await run.exit;
    expect(result.code).toBe(0);
    expect(entries(log)[1]).toEqual({ argv: ['train', '--out', out, '--resume'] });
    expect(result.stderr).toContain('resuming the run');
  });

  it('exits 0 without starting the coordinator when the run has finished', async () => {
    const { out, log, env } = fresh();
    writeFileSync(join(out, 'summary.json'), '{}');
    const result = await startWrapper([`--out=${out}`], { ...env, FAKE_MODE: 'fail' }).exit;
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('has already finished');
    expect(entries(log)).toEqual([]);
  });

  it('passes SIGTERM on exactly once and exits 75 when the coordinator stopped before the end', async () => {
    const { out, log, env } = fresh();
    const run = startWrapper([`--out=${out}`], { ...env, FAKE_MODE: 'wait' });
    await until(() => entries(log).some((e) => e.ready), 'the stand-in to start');
    // SIGINT to the wrapper alone is not passed on: a terminal's Ctrl-C reaches the
    // coordinator directly, and a second copy would make it exit without a checkpoint.
    run.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 300));
    expect(entries(log).filter((e) => e.signal)).toEqual([]);
    run.child.kill('SIGTERM');
    const result = await run.exit;
    expect(entries(log).filter((e) => e.signal)).toEqual([{ signal: 'SIGTERM' }]);
    expect(result.code).toBe(75);
    expect(result.stderr).toContain('stopped before the end');
  });

  it("passes the coordinator's failure status through", async () => {
    const { out, env } = fresh();
    expect((await startWrapper([`--out=${out}`], { ...env, FAKE_MODE: 'fail' }).exit).code).toBe(3);
  });

  it('refuses what it cannot honour, with status 64 and a reason', async () => {
    const { out, env } = fresh();
    const cases: Array<[string[], RegExp]> = [
      [['--min-workers=3'], /--out <dir> is required/],
      [[`--out=${out}`, '--resume'], /do not pass --resume/],
      [[`--out=${out}`, '--in-process'], /--in-process is not supported/],
    ];
    for (const [args, message] of cases) {
      const result = await startWrapper(args, env).exit;
      expect(result.code, args.join(' ')).toBe(64);
      expect(result.stderr).toMatch(message);
    }
  });
});
