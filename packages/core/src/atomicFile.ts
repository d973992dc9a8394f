/**
 * Atomic file writes: write a temporary file in the same folder, fsync it, rename it over the
 * target, then fsync the folder. Readers see the old file or the new one, never half of one,
 * even if the process dies mid-write.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Writes `data` to `path` atomically (see module docs). On failure the temporary file is
 * removed and `path` is left as it was. `data` may be several chunks, written one after another,
 * so a large file need not be assembled in memory first.
 *
 * @example
 * ```ts
 * await writeFileAtomic('runs/a/summary.json', JSON.stringify(summary));
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array | readonly Uint8Array[],
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await open(tmp, 'w');
    try {
      if (Array.isArray(data)) for (const chunk of data) await handle.write(chunk);
      else await handle.writeFile(data as string | Uint8Array);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  await syncDir(dir);
}

/** fsyncs a folder so a rename inside it survives a crash. Best effort: not every OS allows it. */
export async function syncDir(dir: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Some platforms (Windows, some network file systems) cannot fsync a folder.
  } finally {
    await handle?.close();
  }
}
