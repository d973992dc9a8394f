import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The built worker CLI, which e2e tests start as remote workers. */
export const workerCli = fileURLToPath(new URL('../../worker/dist/cli.js', import.meta.url));

/** A node process started by a test, with its output collected as it comes. */
export interface TestProcess {
  readonly child: ChildProcess;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly closed: Promise<number | null>;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Each stdout line parsed as JSON (`--log-format json` events), in order, as they come. */
  readonly events: Array<Record<string, unknown> & { event: string }>;
  /** Resolves with the first event of this kind (rejects if the process exits first). */
  event(kind: string): Promise<Record<string, unknown>>;
}

const running = new Set<ChildProcess>();

/** Starts `node script ...args`; {@link killStarted} stops whatever a failed test left running. */
export function startProcess(
  script: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): TestProcess {
  const child = spawn(process.execPath, [script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  running.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d;
  });
  const events: TestProcess['events'] = [];
  const waiting: Array<{ kind: string; resolve: (e: Record<string, unknown>) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let event: TestProcess['events'][number];
    try {
      event = JSON.parse(line);
    } catch {
      return;
    }
    events.push(event);
    for (const w of waiting.filter((w) => w.kind === event.event)) {
      waiting.splice(waiting.indexOf(w), 1);
      w.resolve(event);
    }
  });
  const closed = new Promise<number | null>((resolve) => {
    child.on('close', (code) => {
      running.delete(child);
      resolve(code);
    });
  });
  return {
    child,
    closed,
    stderr: () => stderr,
    events,
    event(kind) {
      const seen = events.find((e) => e.event === kind);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiting.push({ kind, resolve });
        void closed.then((code) =>
          reject(new Error(`exited (${code}) before a ${kind} event: ${stderr.slice(-2000)}`)),
        );
      });
    },
  };
}

/** Kills every process {@link startProcess} started that is still running. */
export function killStarted(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

/** Rejects when `promise` takes longer than `ms`, naming `what`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Resolves with the first JSON log record on `process`'s stderr (`--log-format json`) that
 * satisfies `match`; rejects when the process exits first.
 */
export async function logged(
  process: TestProcess,
  match: (record: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  for (;;) {
    for (const line of process.stderr().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const record = JSON.parse(line) as Record<string, unknown>;
        if (match(record)) return record;
      } catch {
        // A line still being written.
      }
    }
    if (process.child.exitCode !== null || process.child.signalCode !== null) {
      throw new Error(`exited before the expected log line: ${process.stderr().slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Runs `command` to its end and resolves with its exit code and its stdout and stderr
 * interleaved as they came (for programs whose whole output a test reads afterwards).
 */
export function runToEnd(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let output = '';
    child.stdout.on('data', (d: Buffer) => {
      output += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d;
    });
    child.on('close', (code) => resolve({ code, output }));
  });
}
