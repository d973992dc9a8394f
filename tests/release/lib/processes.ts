/**
 * Running the real tools (pnpm, npm, tsc, the installed CLIs) with a deadline. Every command
 * runs in its own process group so a timeout kills what it started too (npm's install scripts,
 * node-gyp), and a failure says which command, where, how it ended and what it printed.
 */
import { spawn } from 'node:child_process';
import { packageManagerEnv } from '../../../scripts/pack-all.mjs';

/**
 * Process groups still running. They live in groups of their own (so a timeout can kill npm
 * and the install scripts it started), which also puts them out of reach of a Ctrl-C or a
 * killed test run: kill what is left when this process exits.
 */
const running = new Set<number>();
process.on('exit', () => {
  for (const pid of running) killGroup(pid);
});

/** How a command ended and what it printed. */
export interface RunResult {
  /** Exit status; null when a signal ended it. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the deadline passed and the process group was killed. */
  timedOut: boolean;
  /** Wall-clock seconds. */
  seconds: number;
}

/** Options of {@link run}. */
export interface RunOptions {
  cwd: string;
  /** Hard deadline; the whole process group is killed when it passes. */
  timeoutMs: number;
  /** Variables on top of {@link packageManagerEnv} (the parent's, minus npm_* / pnpm_*). */
  env?: Record<string, string | undefined>;
  /** Replace the environment entirely (still without npm_* / pnpm_* unless given here). */
  replaceEnv?: Record<string, string>;
}

/** Runs `command args` and resolves with how it ended; never rejects for a non-zero exit. */
export function run(
  command: string,
  args: readonly string[],
  options: RunOptions,
): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.replaceEnv ?? packageManagerEnv(options.env),
      stdio: ['ignore', 'pipe', 'pipe'],
      // Own process group: a timeout kills npm and the install scripts it spawned, not just npm.
      detached: true,
    });
    if (child.pid !== undefined) running.add(child.pid);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, options.timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      if (child.pid !== undefined) running.delete(child.pid);
      reject(
        new Error(`Could not start ${describe(command, args)} in ${options.cwd}: ${error.message}`),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (child.pid !== undefined) running.delete(child.pid);
      resolvePromise({
        code,
        signal,
        stdout,
        stderr,
        timedOut,
        seconds: (performance.now() - started) / 1000,
      });
    });
  });
}

/**
 * Runs a command that must succeed: resolves with its result when it exits 0, else rejects with
 * the command, the folder, how it ended and the end of its output.
 */
export async function runOk(
  command: string,
  args: readonly string[],
  options: RunOptions,
): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code === 0 && !result.timedOut) return result;
  throw new Error(
    `${describe(command, args)} in ${options.cwd} ${ending(result, options)}\n${tails(result)}`,
  );
}

/** "exited with 1", "was killed after 120 s (timeout)", ... */
export function ending(result: RunResult, options: Pick<RunOptions, 'timeoutMs'>): string {
  if (result.timedOut) return `did not finish within ${options.timeoutMs / 1000} s and was killed`;
  if (result.signal) return `was ended by ${result.signal}`;
  return `exited with ${result.code} (expected 0)`;
}

/** The last lines of stdout and stderr, for failure messages. */
export function tails(result: Pick<RunResult, 'stdout' | 'stderr'>, chars = 4000): string {
  const tail = (text: string) => (text.length > chars ? `...${text.slice(-chars)}` : text);
  return `--- stdout ---\n${tail(result.stdout)}\n--- stderr ---\n${tail(result.stderr)}`;
}

/** Kills a process group started with `detached: true`, ignoring one that is already gone. */
export function killGroup(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // Already exited.
  }
}

function describe(command: string, args: readonly string[]): string {
  return `\`${[command, ...args].join(' ')}\``;
}
