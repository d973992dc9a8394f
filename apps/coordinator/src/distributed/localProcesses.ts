/**
 * `--local-workers N`: worker processes on this machine, started by the coordinator and
 * stopped with it. Their logs go to the coordinator's stderr; a worker that exits with an error
 * fails the job with its last words instead of leaving the coordinator waiting.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ShardlineError } from '@shardline/core';
import { EXIT_COORDINATOR_STOPPED } from '@shardline/training';

/** Where the `shardline-worker` program of the installed @shardline/worker lives. */
export function workerCliPath(): string {
  const pkg = createRequire(import.meta.url).resolve('@shardline/worker/package.json');
  return join(dirname(pkg), 'dist', 'cli.js');
}

/** Options of {@link startLocalWorkers}. */
export interface LocalWorkersOptions {
  count: number;
  coordinator: string;
  args: string[];
  /** Environment overrides for the workers (secrets go here, not in `args`, which `ps` shows);
   * `undefined` removes a variable inherited from this process. */
  env?: Record<string, string | undefined>;
  /** Receives each worker's stderr lines. */
  stderr: { write(chunk: string): unknown };
  /** Called once if a worker exits unexpectedly (non-zero, or by a signal we did not send). */
  onUnexpectedExit(error: ShardlineError, name: string): void;
}

/** The started processes. */
export interface LocalWorkers {
  readonly processes: readonly ChildProcess[];
  /** Waits up to `ms` for every worker to exit, then kills the rest. */
  stop(ms: number): Promise<void>;
}

/**
 * Local workers take their settings from the coordinator (its arguments and `overrides`), never
 * from SHARDLINE_* variables this process happens to inherit: those may be meant for another
 * worker on the machine (a token file, TLS files, a config file, --no-download) or for the
 * coordinator itself, and would override or contradict what the coordinator decided.
 * SHARDLINE_DATA_DIR stays: it means the same folder to both programs; so does
 * SHARDLINE_RESIDENT_BYTES, the memory budget of image sets on this machine. Every SHARDLINE_*
 * variable goes, not only the worker's current ones, so a setting added to the worker later is
 * covered without the coordinator having to know it.
 */
const INHERITED_WORKER_VARIABLES = new Set(['SHARDLINE_DATA_DIR', 'SHARDLINE_RESIDENT_BYTES']);

function childEnv(overrides: Record<string, string | undefined> | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('SHARDLINE_') || INHERITED_WORKER_VARIABLES.has(name)) env[name] = value;
  }
  for (const [name, value] of Object.entries(overrides ?? {})) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  return env;
}

/** Starts `count` worker processes that join `coordinator`. */
export function startLocalWorkers(options: LocalWorkersOptions): LocalWorkers {
  const cli = workerCliPath();
  let stopping = false;
  const processes = Array.from({ length: options.count }, (_, i) => {
    const name = `local-${i + 1}`;
    const child = spawn(
      process.execPath,
      [cli, '--coordinator', options.coordinator, '--name', name, ...options.args],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: childEnv(options.env),
        // Their own process group: a Ctrl-C in the terminal reaches only the coordinator, which
        // then finishes the step, checkpoints and stops its workers itself. (If the coordinator
        // is killed outright, they notice the broken stream, try to rejoin, and give up after
        // --connect-timeout.)
        detached: true,
      },
    );
    let lastLine = '';
    let buffered = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      options.stderr.write(text);
      buffered += text;
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      const last = lines.filter((l) => l.trim() !== '').pop();
      if (last) lastLine = last;
    });
    child.on('exit', (code, signal) => {
      // EXIT_COORDINATOR_STOPPED: this coordinator told it so, on its way out.
      if (stopping || code === 0 || code === EXIT_COORDINATOR_STOPPED) return;
      options.onUnexpectedExit(
        new ShardlineError(
          'INTERNAL',
          `Local worker ${name} exited with ${signal ? `signal ${signal}` : `status ${code}`}${lastLine ? `: ${lastLine.trim()}` : ''}`,
        ),
        name,
      );
    });
    return child;
  });
  return {
    processes,
    async stop(ms) {
      stopping = true;
      const exits = processes.map((p) =>
        p.exitCode !== null || p.signalCode !== null
          ? Promise.resolve()
          : new Promise<void>((r) => p.once('exit', () => r())),
      );
      const timer = setTimeout(() => {
        for (const p of processes)
          if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      }, ms);
      await Promise.all(exits);
      clearTimeout(timer);
    },
  };
}
