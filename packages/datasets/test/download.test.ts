import { readdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@shardline/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type LoadDatasetOptions, loadDataset } from '../src/load.js';
import { createProgressReporter, type DownloadProgress } from '../src/progress.js';
import {
  serveFiles,
  startServer,
  type TestServer,
  TINY,
  tempDir,
  tinyDescriptor,
  tinyFiles,
  writeFiles,
} from './fixtures.js';

const files = tinyFiles();
const names = [...files.keys()];

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (error) {
    return error as { code: string; message: string };
  }
  throw new Error('expected a rejection');
}

describe('downloading into the cache', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let cache: string;
  let base: LoadDatasetOptions;
  const servers: TestServer[] = [];
  const serve = async (...args: Parameters<typeof startServer>) => {
    const server = await startServer(...args);
    servers.push(server);
    return server;
  };

  beforeEach(async () => {
    ({ dir: root, cleanup } = await tempDir());
    cache = join(root, 'cache', 'tiny');
    base = { env: {}, cacheDir: cache, searchPaths: [join(root, 'system')], progress: 'none' };
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await cleanup();
  });

  const cacheContents = async () => (await readdir(cache).catch(() => [] as string[])).sort();

  it('downloads, verifies and stores the files; the next load reads the cache', async () => {
    const server = await serve(serveFiles(files));
    const progress: DownloadProgress[] = [];
    const descriptor = tinyDescriptor(files, [server.url]);
    const loaded = await loadDataset(descriptor, { ...base, onProgress: (p) => progress.push(p) });
    expect(loaded.source.location.kind).toBe('cache');
    expect([...loaded.source.downloaded].sort()).toEqual([...names].sort());
    expect(loaded.source.verified).toBe(true);
    expect(loaded.train.count).toBe(TINY.train);
    expect(await cacheContents()).toEqual([...names].sort());
    for (const name of names) expect(await readFile(join(cache, name))).toEqual(files.get(name));
    expect(server.requests).toEqual(names.map((n) => `/data/${n}`));
    // Every file reports its final size once, as done.
    const done = progress.filter((p) => p.done);
    expect(done.map((p) => [p.file, p.receivedBytes, p.totalBytes])).toEqual(
      names.map((n) => [n, files.get(n)!.length, files.get(n)!.length]),
    );

    const again = await loadDataset(descriptor, base);
    expect(again.source.downloaded).toEqual([]);
    expect(server.requests.length).toBe(4);
  });

  it('downloads only the files the cache lacks', async () => {
    await writeFiles(cache, files, ['train-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']);
    const server = await serve(serveFiles(files));
    const loaded = await loadDataset(tinyDescriptor(files, [server.url]), base);
    expect([...loaded.source.downloaded].sort()).toEqual([
      't10k-images-idx3-ubyte.gz',
      'train-labels-idx1-ubyte.gz',
    ]);
    expect(server.requests.length).toBe(2);
  });

  it('downloads into the cache even when dataDir names the cache directory', async () => {
    const server = await serve(serveFiles(files));
    const loaded = await loadDataset(tinyDescriptor(files, [server.url]), {
      ...base,
      dataDir: cache,
    });
    expect(loaded.source.location).toMatchObject({ kind: 'dataDir', dir: cache });
    expect(loaded.source.downloaded.length).toBe(4);
  });

  it('falls back to the next mirror when one fails', async () => {
    const broken = await serve((_req, res) => res.writeHead(404).end());
    const good = await serve(serveFiles(files));
    const loaded = await loadDataset(tinyDescriptor(files, [broken.url, good.url]), base);
    expect(loaded.source.downloaded.length).toBe(4);
    expect(broken.requests.length).toBe(4);
  });

  it('a transfer cut mid-way leaves nothing behind and says so', async () => {
    const server = await serve((_req, res, name) => {
      const body = files.get(name)!;
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
    });
    const e = await rejection(loadDataset(tinyDescriptor(files, [server.url]), base));
    expect(e.code).toBe('NETWORK');
    expect(e.message).toContain('Tiny not found locally and downloading failed');
    expect(e.message).toContain(`${server.url}train-images-idx3-ubyte.gz`);
    expect(await cacheContents()).toEqual([]);
  });

  it('a short body that ends cleanly fails verification and leaves nothing behind', async () => {
    // No Content-Length, so only the checksum can tell the file is incomplete.
    const server = await serve((_req, res, name) => {
      const body = files.get(name)!;
      res.writeHead(200, { 'transfer-encoding': 'chunked' });
      res.end(body.subarray(0, body.length - 3));
    });
    const e = await rejection(loadDataset(tinyDescriptor(files, [server.url]), base));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(await cacheContents()).toEqual([]);
  });

  it('wrong bytes: a checksum error naming expected and found digests, nothing cached', async () => {
    const impostor = tinyFiles();
    const wrong = Buffer.from(impostor.get('train-images-idx3-ubyte.gz')!);
    // Same size and still a valid gzip member of the same length: flip one byte of the mtime.
    wrong[5] = (wrong[5]! + 1) % 256;
    impostor.set('train-images-idx3-ubyte.gz', wrong);
    const server = await serve(serveFiles(impostor));
    const descriptor = tinyDescriptor(files, [server.url]);
    const e = await rejection(loadDataset(descriptor, base));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain('is not the published Tiny file');
    expect(e.message).toContain(descriptor.train.images.sha256[0]);
    expect(e.message).toContain('nothing was saved');
    expect(await cacheContents()).toEqual([]);
  });

  it('offline: a NETWORK error listing every place looked, the URL tried and how to provide the files', async () => {
    const gone = await startServer(serveFiles(files));
    await gone.close(); // its port now refuses connections
    const dataDir = join(root, 'data');
    const e = await rejection(
      loadDataset(tinyDescriptor(files, [gone.url]), {
        ...base,
        dataDir,
        env: { SHARDLINE_DATA_DIR: join(root, 'env') },
      }),
    );
    expect(e.code).toBe('NETWORK');
    for (const dir of [
      dataDir,
      join(dataDir, 'tiny'),
      join(root, 'env'),
      cache,
      join(root, 'system'),
    ]) {
      expect(e.message).toContain(dir);
    }
    expect(e.message).toContain(`${gone.url}train-images-idx3-ubyte.gz`);
    expect(e.message).toContain('ECONNREFUSED');
    expect(e.message).toContain(`copy the 4 files into ${cache}`);
    expect(await cacheContents()).toEqual([]);
  });

  it('can be cancelled mid-transfer, leaving nothing behind', async () => {
    const server = await serve((_req, res, name) => {
      const body = files.get(name)!;
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, 10)); // and never finish
    });
    const controller = new AbortController();
    const e = await rejection(
      loadDataset(tinyDescriptor(files, [server.url]), {
        ...base,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.receivedBytes > 0) controller.abort();
        },
      }),
    );
    expect(e.code).toBe('CANCELLED');
    expect(await cacheContents()).toEqual([]);
  });

  it('removes temp files of crashed downloads, keeps those of live ones', async () => {
    const dead = `.train-images-idx3-ubyte.gz~${hostname()}~999999999~0000.part`;
    const live = `.train-images-idx3-ubyte.gz~${hostname()}~${process.pid}~1111.part`;
    await writeFiles(
      cache,
      new Map([
        [dead, Buffer.from('x')],
        [live, Buffer.from('y')],
      ]),
    );
    const server = await serve(serveFiles(files));
    await loadDataset(tinyDescriptor(files, [server.url]), base);
    const left = await cacheContents();
    expect(left).not.toContain(dead);
    expect(left).toContain(live);
  });

  it('download: false never touches the network', async () => {
    const server = await serve(serveFiles(files));
    const e = await rejection(
      loadDataset(tinyDescriptor(files, [server.url]), { ...base, download: false }),
    );
    expect(e.code).toBe('NOT_FOUND');
    expect(e.message).toContain('downloads are turned off');
    expect(server.requests).toEqual([]);
  });

  it('reports progress as log lines when not on a TTY (and never on stdout)', async () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: 'info',
      format: 'json',
      sink: { write: (l) => lines.push(l) },
    });
    const stdoutWrite = process.stdout.write;
    let stdoutBytes = 0;
    process.stdout.write = ((chunk: string | Uint8Array) => {
      stdoutBytes += chunk.length;
      return true;
    }) as typeof process.stdout.write;
    try {
      const server = await serve(serveFiles(files));
      await writeFile(join(root, 'placeholder'), '');
      await loadDataset(tinyDescriptor(files, [server.url]), {
        ...base,
        logger,
        progress: 'auto',
        progressStream: { isTTY: false, write: () => true },
      });
    } finally {
      process.stdout.write = stdoutWrite;
    }
    expect(stdoutBytes).toBe(0);
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.some((r) => r.msg === 'downloading train-images-idx3-ubyte.gz')).toBe(true);
    expect(
      records.some((r) => String(r.msg).startsWith('downloaded train-images-idx3-ubyte.gz')),
    ).toBe(true);
    expect(records.at(-1)?.msg).toBe(`loaded Tiny from ${cache} (user cache)`);
  });
});

describe('progress reporter', () => {
  it('draws a bar in place on a TTY and ends the line when done', () => {
    const out: string[] = [];
    let t = 0;
    const report = createProgressReporter({
      stream: { isTTY: true, columns: 100, write: (s) => out.push(s) },
      now: () => t,
    });
    const p = { file: 'f.gz', url: 'u', totalBytes: 1_000_000 };
    report({ ...p, receivedBytes: 0, done: false });
    t = 50;
    report({ ...p, receivedBytes: 100_000, done: false }); // throttled
    t = 500;
    report({ ...p, receivedBytes: 500_000, done: false });
    t = 1000;
    report({ ...p, receivedBytes: 1_000_000, done: true });
    expect(out.length).toBe(3);
    expect(out[1]!.startsWith('\rf.gz [###')).toBe(true);
    expect(out[1]).toContain('.]  50% 0.5/1.0 MB 1.0 MB/s');
    expect(out[1]!.endsWith('\x1b[K')).toBe(true);
    expect(out[2]!.endsWith('\n')).toBe(true);
    expect(out[2]).toContain('100%');
  });

  it('writes a line per 10% when not on a TTY, and nothing in mode none', () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: 'info',
      format: 'text',
      sink: { write: (l) => lines.push(l) },
    });
    const report = createProgressReporter({
      stream: { isTTY: false, write: () => true },
      logger,
      now: () => 0,
    });
    for (let i = 0; i <= 100; i++) {
      report({ file: 'f', url: 'u', receivedBytes: i * 10, totalBytes: 1000, done: i === 100 });
    }
    expect(lines.length).toBe(11); // 0%, 10%, ..., 90%, then done at 100%
    const silent = createProgressReporter({ mode: 'none' });
    silent({ file: 'f', url: 'u', receivedBytes: 1, totalBytes: 1, done: true });
  });
});
