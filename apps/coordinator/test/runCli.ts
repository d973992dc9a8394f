import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The built CLI: tests run the real program as users do (the root test script builds first). */
export const cliPath = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

/** The outcome of one CLI run. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout's lines parsed as JSON, for `--log-format json` runs. */
  events(): Array<Record<string, unknown> & { event: string }>;
}

/** Runs `shardline-coordinator <args>` in a child process and collects its output. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({
        code,
        stdout,
        stderr,
        events: () =>
          stdout
            .split('\n')
            .filter((l) => l.trim() !== '')
            .map((l) => JSON.parse(l)),
      }),
    );
  });
}
