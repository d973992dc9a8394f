/**
 * What a new user sees from `shardline-coordinator train` with two local workers, run as the
 * real CLI: with its output piped (plain progress lines), under a pseudo-terminal 160 columns
 * wide (the live bar), and with `--log-format json`. Routine worker records must be in
 * `<out>/logs/<name>.log` and nowhere on the terminal, and the normal end must not read like a
 * failure. 10 to 20 s a run on two cores.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runToEnd } from './processes.js';
import { cliPath, runCli } from './runCli.js';

const JOB = [
  'train',
  '--model',
  'fast-cnn',
  '--epochs',
  '1',
  '--local-workers',
  '2',
  '--listen',
  '127.0.0.1:0',
];
/** 64 steps of 32 images: enough for a tenth-of-an-epoch line and a bar redrawn many times. */
const DATA = ['--limit-train', '2048', '--limit-test', '500'];

let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-terminal-'));
});
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

/** Lines the workers log at INFO every 50 steps: they belong in their log files only. */
const ROUTINE = /steps computed|joined coordinator|warmed up/;

async function expectWorkerLogs(dir: string): Promise<void> {
  for (const name of ['local-1', 'local-2']) {
    const log = await readFile(join(dir, 'logs', `${name}.log`), 'utf8');
    expect(log).toContain('local worker started by the coordinator');
    expect(log).toMatch(ROUTINE);
    expect(log).toContain('coordinator stopped this worker');
    expect(log).toMatch(/local worker exited .*status=0/);
  }
}

/**
 * What a terminal shows for `raw`: carriage returns move to column 0, CSI 2 K erases the line,
 * newlines commit it. Returns the committed lines and every line as it was drawn (the bar's
 * redraws included), so a test can check both the scrollback and the widest moment.
 */
function emulateTerminal(raw: string): { lines: string[]; drawn: string[] } {
  const lines: string[] = [];
  const drawn: string[] = [];
  let current = '';
  let column = 0;
  const put = (ch: string) => {
    current = current.slice(0, column) + ch + current.slice(column + 1);
    column++;
  };
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (ch === '\x1b') {
      // A CSI sequence: ESC [ parameters letter.
      const match = /^\[(\d*)([A-Za-z])/.exec(raw.slice(i + 1));
      if (match) {
        if (match[2] === 'K' && match[1] === '2') {
          drawn.push(current);
          current = '';
        }
        i += match[0].length;
        continue;
      }
    }
    if (ch === '\r') column = 0;
    else if (ch === '\n') {
      drawn.push(current);
      lines.push(current);
      current = '';
      column = 0;
    } else put(ch);
  }
  if (current !== '') {
    drawn.push(current);
    lines.push(current);
  }
  return { lines, drawn };
}

describe('the coordinator terminal output', () => {
  it('piped: plain progress lines, an epoch summary and a Done summary; worker routine only in <out>/logs; no leave at the end', async () => {
    const dir = join(out, 'piped');
    const run = await runCli([...JOB, ...DATA, '--out', dir]);
    expect(run.code, run.stderr).toBe(0);
    const all = run.stdout + run.stderr;
    expect(all).not.toMatch(ROUTINE);
    expect(all).not.toMatch(/cancelled its stream|left:/);
    expect(all).not.toContain('\x1b');
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^Training fast-cnn on fashion-mnist \(distributed/);
    expect(lines[1]).toBe(
      `Local worker logs: ${join(dir, 'logs')} (one file per worker; their warnings and errors show here too).`,
    );
    const progress = lines.filter((l) => /^Epoch 1\/1 {2}\d+\/64 \(\d+%\) {2}ETA /.test(l));
    expect(progress.length).toBeGreaterThanOrEqual(5);
    expect(lines).toContainEqual(
      expect.stringMatching(
        /^Epoch 1\/1 {2}64\/64 {2}\S+ {2}\d+ms\/step {2}loss \d\.\d{3,4} {2}acc \d+\.\d\d% {2}test loss \d\.\d{3,4} {2}test acc \d+\.\d\d% {2}\d+ img\/s$/,
      ),
    );
    expect(lines.at(-4)).toMatch(
      /^Done in \S+: 1 epoch, test accuracy \d+\.\d\d% \(loss \d\.\d{3,4}\)\.$/,
    );
    expect(lines.slice(-3)).toEqual([
      `Model: ${join(dir, 'model')}`,
      `Summary: ${join(dir, 'summary.json')}`,
      `Worker logs: ${join(dir, 'logs')}`,
    ]);
    await expectWorkerLogs(dir);
  });

  const hasScript = spawnSync('script', ['--version']).status === 0;
  it.runIf(hasScript)(
    'on a 160-column terminal: one live bar that never exceeds the width, log lines never inside it',
    async () => {
      const dir = join(out, 'tty');
      // Checkpoints every 16 steps make the coordinator log a line while the bar is up.
      const command = [
        process.execPath,
        cliPath,
        ...JOB,
        ...DATA,
        '--checkpoint-every',
        '16',
        '--out',
        dir,
      ]
        .map((arg) => `'${arg}'`)
        .join(' ');
      const raw = await runToEnd(
        'script',
        ['-qfec', `stty cols 160 rows 50; exec ${command}`, '/dev/null'],
        { ...process.env, COLUMNS: '160' },
      );
      expect(raw.code, raw.output.slice(-3000)).toBe(0);
      const { lines, drawn } = emulateTerminal(raw.output);
      const bars = drawn.filter((l) => /^Epoch 1\/1 {2}\[[=>.]+\]/.test(l));
      expect(bars.length).toBeGreaterThanOrEqual(3);
      for (const bar of bars) expect(bar.length, bar).toBeLessThan(160);
      expect(bars.at(-1)).toMatch(/\[=+\] {2}64\/64 {2}evaluating/);
      // No bar, or piece of one, is left in the scrollback: each was erased before the next line.
      expect(lines.filter((l) => /\[[=>.]{5,}\]/.test(l))).toEqual([]);
      // The coordinator's log lines start on a line of their own, whole.
      const checkpoints = lines.filter((l) => l.includes('checkpoint written'));
      expect(checkpoints.length).toBeGreaterThanOrEqual(3);
      for (const l of checkpoints)
        expect(l).toMatch(/^\d{4}-\d\d-\d\dT\S+Z INFO {2}checkpoint written /);
      expect(raw.output).not.toMatch(ROUTINE);
      expect(raw.output).not.toMatch(/cancelled its stream|left:/);
      expect(lines).toContainEqual(expect.stringMatching(/^Epoch 1\/1 {2}64\/64 {2}/));
      expect(lines).toContainEqual(expect.stringMatching(/^Done in \S+: 1 epoch, test accuracy/));
      await expectWorkerLogs(dir);
    },
  );

  it('--log-format json: the same events on stdout, JSON Lines on stderr, the end marked job_ended', async () => {
    const dir = join(out, 'json');
    // Half the data: the events, not the progress, are what this run checks.
    const run = await runCli([
      ...JOB,
      '--limit-train',
      '1024',
      '--limit-test',
      '200',
      '--log-format',
      'json',
      '--out',
      dir,
    ]);
    expect(run.code, run.stderr).toBe(0);
    const events = run.events();
    expect(events.map((e) => e.event).filter((e) => e !== 'worker_left')).toEqual([
      'started',
      'worker_joined',
      'worker_joined',
      'epoch_end',
      'done',
    ]);
    expect(events.at(-1)).toMatchObject({ event: 'done', epoch: 1, step: 32 });
    // Workers told to stop at the end still leave as events, but as the job ending.
    for (const left of events.filter((e) => e.event === 'worker_left')) {
      expect(left).toMatchObject({ job_ended: true, reason: 'told to stop: Training finished' });
    }
    // The workers' records shown there stay JSON (no name prefix), and none is a routine one.
    expect(run.stderr).not.toMatch(/^\[local-/m);
    expect(run.stderr).not.toMatch(ROUTINE);
    expect(existsSync(join(dir, 'logs', 'local-1.log'))).toBe(true);
    const record = (await readFile(join(dir, 'logs', 'local-1.log'), 'utf8')).split('\n')[0]!;
    expect(JSON.parse(record)).toMatchObject({
      level: 'info',
      msg: 'local worker started by the coordinator',
      name: 'local-1',
    });
  });
});
