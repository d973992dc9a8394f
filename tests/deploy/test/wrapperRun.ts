/**
 * Runs deploy/bin/shardline-coordinator-job, the wrapper Kubernetes and systemd restart, as a
 * child process: both its test files drive it the same way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The wrapper script in this checkout. */
export const wrapperPath = fileURLToPath(
  new URL('../../../deploy/bin/shardline-coordinator-job', import.meta.url),
);

/** A started wrapper and how it ended. */
export interface WrapperRun {
  child: ChildProcess;
  exit: Promise<{ code: number | null; stderr: string }>;
}

/** Starts the wrapper with `args`, `env` added to this process's environment. */
export function startWrapper(args: string[], env: NodeJS.ProcessEnv): WrapperRun {
  const child = spawn(wrapperPath, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d;
  });
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stderr })),
  );
  return { child, exit };
}
