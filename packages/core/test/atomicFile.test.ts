import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../src/atomicFile.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shardline-atomic-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('writeFileAtomic', () => {
  it('replaces the file and leaves no temporary behind', async () => {
    const path = join(dir, 'summary.json');
    await writeFile(path, 'old');
    await writeFileAtomic(path, 'new');
    expect(await readFile(path, 'utf8')).toBe('new');
    expect(await readdir(dir)).toEqual(['summary.json']);
  });

  it('writes several chunks one after another, without joining them first', async () => {
    const path = join(dir, 'cache.bin');
    await writeFileAtomic(path, [Uint8Array.of(1, 2), Uint8Array.of(), Uint8Array.of(3)]);
    expect([...(await readFile(path))]).toEqual([1, 2, 3]);
    expect(await readdir(dir)).toEqual(['cache.bin']);
  });

  it('leaves the old file intact and cleans up when the write fails', async () => {
    const path = join(dir, 'summary.json');
    await writeFile(path, 'old');
    // A folder in place of the target makes the final rename fail after the data was written.
    const blocked = join(dir, 'blocked');
    await mkdir(join(blocked, 'child'), { recursive: true });
    await expect(writeFileAtomic(blocked, 'data')).rejects.toThrow();
    expect(await readFile(path, 'utf8')).toBe('old');
    expect((await readdir(dir)).sort()).toEqual(['blocked', 'summary.json']);
  });
});
