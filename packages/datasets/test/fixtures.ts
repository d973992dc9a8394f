// Small synthetic IDX datasets on disk and a real HTTP server that serves them, for tests.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { DatasetDescriptor } from '../src/descriptors.js';
import { encodeIdx } from '../src/idx.js';

export const TINY = { height: 4, width: 3, classes: 3, train: 12, test: 5 } as const;

/** Pixel (sample i, row y, column x) of the tiny dataset: distinct enough to catch mix-ups. */
export function tinyPixel(split: 'train' | 'test', i: number, y: number, x: number): number {
  return (i * 17 + y * 5 + x * 3 + (split === 'test' ? 101 : 0)) % 256;
}

export function tinyLabel(split: 'train' | 'test', i: number): number {
  return (i + (split === 'test' ? 1 : 0)) % TINY.classes;
}

/** The four files of the tiny dataset, gzipped, keyed by published name. */
export function tinyFiles(): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  for (const split of ['train', 'test'] as const) {
    const count = TINY[split];
    const images = new Uint8Array(count * TINY.height * TINY.width);
    const labels = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      labels[i] = tinyLabel(split, i);
      for (let y = 0; y < TINY.height; y++) {
        for (let x = 0; x < TINY.width; x++) {
          images[(i * TINY.height + y) * TINY.width + x] = tinyPixel(split, i, y, x);
        }
      }
    }
    const prefix = split === 'train' ? 'train' : 't10k';
    files.set(
      `${prefix}-images-idx3-ubyte.gz`,
      gzipSync(encodeIdx([count, TINY.height, TINY.width], images)),
    );
    files.set(`${prefix}-labels-idx1-ubyte.gz`, gzipSync(encodeIdx([count], labels)));
  }
  return files;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A descriptor pinning the tiny files' digests, served from `mirrors`. */
export function tinyDescriptor(
  files: Map<string, Buffer>,
  mirrors: readonly string[] = [],
): DatasetDescriptor {
  const file = (name: string) => ({ name, sha256: [sha256(files.get(name)!)] });
  return {
    name: 'tiny',
    title: 'Tiny',
    train: {
      images: file('train-images-idx3-ubyte.gz'),
      labels: file('train-labels-idx1-ubyte.gz'),
      count: TINY.train,
    },
    test: {
      images: file('t10k-images-idx3-ubyte.gz'),
      labels: file('t10k-labels-idx1-ubyte.gz'),
      count: TINY.test,
    },
    height: TINY.height,
    width: TINY.width,
    channels: 1,
    classNames: ['a', 'b', 'c'],
    mirrors,
  };
}

/** A fresh temporary directory and its cleanup. */
export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'shardline-datasets-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Writes `files` (all, or the named ones) into `dir`, creating it. */
export async function writeFiles(
  dir: string,
  files: Map<string, Buffer>,
  only?: readonly string[],
): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, bytes] of files) {
    if (!only || only.includes(name)) await writeFile(join(dir, name), bytes);
  }
}

export interface TestServer {
  /** Base URL ending in "/". */
  url: string;
  /** Paths requested so far. */
  requests: string[];
  close(): Promise<void>;
}

/** An HTTP server on 127.0.0.1:0 whose responses `handle` decides. */
export async function startServer(
  handle: (req: IncomingMessage, res: ServerResponse, name: string) => void,
): Promise<TestServer> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const name = decodeURIComponent(
      new URL(req.url ?? '/', 'http://x').pathname.split('/').pop() ?? '',
    );
    requests.push(req.url ?? '');
    handle(req, res, name);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/data/`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A server that serves `files` correctly (404 for anything else). */
export function serveFiles(files: Map<string, Buffer>) {
  return (_req: IncomingMessage, res: ServerResponse, name: string) => {
    const body = files.get(name);
    if (!body) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/gzip' });
    res.end(body);
  };
}
