/**
 * Writes a set of files into one directory so that a crash or an error never leaves a file
 * half-written: each file goes to a temporary name in the same directory (same file system, so
 * rename is atomic), is flushed to disk, and only then renamed over its final name.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ShardlineError, toShardlineError } from '@shardline/core';

/** One file for {@link writeFilesAtomically}. */
export interface AtomicFile {
  /** File name inside the directory (no separators). */
  readonly name: string;
  readonly data: Uint8Array | string;
}

/** Options of {@link writeFilesAtomically}. */
export interface AtomicWriteOptions {
  /**
   * Runs after every temporary file is written and flushed, before any is renamed into place.
   * Throwing here aborts the write and leaves the directory as it was; tests use it to fail a
   * save at the worst moment.
   */
  beforeCommit?: (tempPaths: readonly string[]) => void | Promise<void>;
}

/**
 * Writes `files` into `dir` (created if missing). Files are renamed into place in the order
 * given, so put the file that "commits" the set (model.json) last. Either the call succeeds, or
 * it throws a ShardlineError (the original as `cause`) and, unless the failure hit between two
 * renames (the message says so), every final name still holds what it held before. Temporary
 * files are removed either way.
 *
 * Renames are atomic one at a time; a crash between two renames leaves the earlier files new and
 * the later ones old. Callers that need the set to agree record a checksum in the last file.
 */
export async function writeFilesAtomically(
  dir: string,
  files: readonly AtomicFile[],
  options: AtomicWriteOptions = {},
): Promise<void> {
  const token = randomBytes(6).toString('hex');
  const temps: string[] = [];
  let committed = 0;
  try {
    await mkdir(dir, { recursive: true });
    for (const file of files) {
      const temp = join(dir, `.${file.name}.${token}.tmp`);
      // 'wx': never follow or reuse an existing file under the temporary name.
      const handle = await open(temp, 'wx', 0o644);
      temps.push(temp);
      try {
        await handle.writeFile(file.data);
        // Flush before rename: otherwise a power loss can leave the new name pointing at a
        // file whose blocks never reached the disk (zero-length or garbage after reboot).
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    await options.beforeCommit?.(temps);
    for (const [i, file] of files.entries()) {
      await rename(temps[i]!, join(dir, file.name));
      committed = i + 1;
    }
  } catch (error) {
    await Promise.all(
      temps.slice(committed).map((temp) => rm(temp, { force: true }).catch(() => {})),
    );
    const cause = toShardlineError(error);
    const names = files.map((f) => f.name);
    const state =
      committed === 0
        ? 'Files already there were left unchanged.'
        : `${names.slice(0, committed).join(', ')} had already been replaced and ${names.slice(committed).join(', ')} had not: the set is inconsistent, write it again.`;
    throw new ShardlineError(
      cause.code,
      `Writing ${names.join(' and ')} to ${dir} failed: ${cause.message.replace(/\.$/, '')}. ${state}`,
      {
        cause: error,
        details: {
          ...cause.details,
          dir,
          committed: names.slice(0, committed),
          errno: (error as NodeJS.ErrnoException | undefined)?.code,
        },
      },
    );
  }
  await syncDirectory(dir);
}

/** Flushes a directory's entries (the renames) to disk; a no-op where the OS does not allow it. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Windows cannot open or fsync a directory (EISDIR/EPERM); the renames are still done.
  } finally {
    await handle?.close().catch(() => {});
  }
}
