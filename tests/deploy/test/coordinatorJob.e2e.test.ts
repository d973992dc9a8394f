/**
 * deploy/bin/shardline-coordinator-job with the real coordinator, as Kubernetes and systemd run
 * it: a clean stop mid-run exits 75 and leaves a checkpoint, the next start resumes it to the
 * end, and a start after that has nothing to do.
 */
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATHS } from './cliSpec.js';
import { startWrapper } from './wrapperRun.js';

let dir: string;

beforeAll(async () => {
  expect(existsSync(CLI_PATHS['shardline-coordinator']), 'build the coordinator first').toBe(true);
  dir = await mkdtemp(join(tmpdir(), 'shardline-job-e2e-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function until(condition: () => boolean, what: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('shardline-coordinator-job with the real coordinator', () => {
  it('stops cleanly with a checkpoint (75), resumes it to the end (0), then has nothing to do (0)', async () => {
    const out = join(dir, 'real-run');
    // The built CLI through a shim, as `shardline-coordinator` is on PATH once installed.
    const shim = join(dir, 'shardline-coordinator');
    writeFileSync(
      shim,
      `#!/bin/sh\nexec "${process.execPath}" "${CLI_PATHS['shardline-coordinator']}" "$@"\n`,
    );
    chmodSync(shim, 0o755);
    const env = { SHARDLINE_COORDINATOR_BIN: shim };
    const args = [
      `--out=${out}`,
      '--listen=127.0.0.1:0',
      '--local-workers=1',
      '--model=mlp',
      '--epochs=2',
      '--batch-size=32',
      '--limit-train=4096',
      '--limit-test=256',
      '--checkpoint-every=10',
      '--backend=wasm',
      '--no-download',
      '--log-format=json',
    ];
    const first = startWrapper(args, env);
    let checkpointed = false;
    first.child.stderr!.on('data', (d: Buffer) => {
      if (String(d).includes('checkpoint written')) checkpointed = true;
    });
    await until(() => checkpointed, 'the first checkpoint', 90_000);
    first.child.kill('SIGTERM');
    const stopped = await first.exit;
    expect(stopped.code, stopped.stderr).toBe(75);
    expect(existsSync(join(out, 'summary.json'))).toBe(false);

    const second = await startWrapper(args, env).exit;
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toContain('resuming the run');
    expect(second.stderr).toContain('resuming from checkpoint');
    expect(existsSync(join(out, 'summary.json'))).toBe(true);

    const third = await startWrapper(args, env).exit;
    expect(third.code).toBe(0);
    expect(third.stderr).toContain('has already finished');
  });
});
