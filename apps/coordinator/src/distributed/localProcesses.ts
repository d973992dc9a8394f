/**
 * `--local-workers N`: worker processes on this machine, started by the coordinator and
 * stopped with it. Each one's log goes to `<out>/logs/<name>.log` (appended to, so a resumed run
 * keeps the earlier part); its warnings and errors, and anything on its stderr that is not a log
 * record (a crash's stack trace), also go to the coordinator's stderr, prefixed with its name.
 * Routine records stay out of the terminal: "steps computed" every 50 steps from every worker
 * would scroll the coordinator's own progress away. A worker that exits with an error fails the
 * job with its last words instead of leaving the coordinator waiting.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createLogger, type LogFormat, logLevelOfLine, ShardlineError } from '@shardline/core';
import { EXIT_COORDINATOR_STOPPED } from '@shardline/training';

/** The folder of a run's local worker logs: `<out>/logs`. */
export function workerLogsDir(out: string): string {
  return join(out, 'logs');
}

/** The log file of the local worker called `name`: `<out>/logs/<name>.log`. */
export function workerLogPath(out: string, name: string): string {
  return join(workerLogsDir(out), `${name}.log`);
}

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
  /** The run's output folder: the workers' logs go to `<out>/logs/<name>.log`. */
  out: string;
  /** The format the workers log in (`--log-format`): their lines are prefixed only in text. */
  logFormat: LogFormat;
  /** Receives each worker's warnings, errors and stray output, one whole line per write. */
  stderr: { write(chunk: string): unknown };
  /** Called once if a worker exits unexpectedly (non-zero, or by a signal we did not send). */
  onUnexpectedExit(error: ShardlineError, name: string): void;
}

/** The started processes. */
export interface LocalWorkers {
  readonly processes: readonly ChildProcess[];
  /** Waits up to `ms` for every worker to exit, then kills the rest; closes their log files. */
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
  // Created with the run's folder, before any worker can write; a failure here (a read-only
  // --out) is reported before a single process starts.
  try {
    mkdirSync(workerLogsDir(options.out), { recursive: true });
  } catch (error) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Cannot create ${workerLogsDir(options.out)} for the local workers' logs: ${(error as Error).message}. Choose an --out folder this user can write to.`,
      { cause: error },
    );
  }
  const workers = Array.from({ length: options.count }, (_, i) => {
    const name = `local-${i + 1}`;
    const logPath = workerLogPath(options.out, name);
    const file = createWriteStream(logPath, { flags: 'a' });
    // A failing disk must not take the run down with it: the records are lost, the run goes on.
    file.on('error', () => {});
    // The file's own records (started, exited) in the workers' format, so it reads as one log.
    const fileLog = createLogger({
      level: 'info',
      format: options.logFormat,
      sink: { write: (text) => file.write(text) },
      fields: { name },
    });
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
    fileLog.info('local worker started by the coordinator', {
      pid: child.pid,
      coordinator: options.coordinator,
    });
    const lines = forwardLines(child, name, file, options);
    // 'close', not 'exit': it comes once the worker's stderr is drained, so its last words are
    // in the file and in the error below.
    const closed = new Promise<void>((resolve) => {
      child.on('close', (code, signal) => {
        lines.flush();
        fileLog.info('local worker exited', signal ? { signal } : { status: code });
        resolve();
        // EXIT_COORDINATOR_STOPPED: this coordinator told it so, on its way out.
        if (stopping || code === 0 || code === EXIT_COORDINATOR_STOPPED) return;
        const last = lines.last();
        options.onUnexpectedExit(
          new ShardlineError(
            'INTERNAL',
            `Local worker ${name} exited with ${signal ? `signal ${signal}` : `status ${code}`}${last ? `: ${last.trim()}` : ''} (its log: ${logPath})`,
          ),
          name,
        );
      });
    });
    return { child, file, closed };
  });
  const processes = workers.map((w) => w.child);
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
      // 'close' follows 'exit' once the worker's stderr is drained: its last lines are in the
      // file before the file is closed.
      await Promise.all(workers.map((w) => w.closed));
      await Promise.all(workers.map((w) => new Promise<void>((r) => w.file.end(() => r()))));
    },
  };
}

/**
 * Splits a worker's stderr into lines: each goes to its log file, and the ones people should see
 * (warnings, errors, anything that is not a log record) to `options.stderr` as well, in text
 * prefixed with the worker's name (its JSON records carry `name` already, and a prefix would
 * break them as JSON Lines).
 */
function forwardLines(
  child: ChildProcess,
  name: string,
  file: WriteStream,
  options: Pick<LocalWorkersOptions, 'stderr' | 'logFormat'>,
): { flush(): void; last(): string } {
  let buffered = '';
  let lastLine = '';
  const take = (text: string) => {
    file.write(`${text}\n`);
    if (text.trim() !== '') lastLine = text;
    if (!shown(text)) return;
    options.stderr.write(options.logFormat === 'json' ? `${text}\n` : `[${name}] ${text}\n`);
  };
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => {
    buffered += text;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const l of lines) take(l);
  });
  return {
    flush() {
      if (buffered !== '') take(buffered);
      buffered = '';
    },
    last: () => lastLine,
  };
}

/** Whether a worker's stderr line belongs on the coordinator's terminal, not only in its log. */
function shown(line: string): boolean {
  if (line.trim() === '') return false;
  const level = logLevelOfLine(line);
  return level === undefined || level === 'warn' || level === 'error';
}
