// Memory and speed of image folders: decoding a folder once (into the cache file), then feeding
// batches from it, with the pixels in memory and paged from the file (PagedImages).
//
// Folders of 224x224 RGB shapes (writeShapesFolder, 4 classes; 150 KB per decoded image) of
// growing size. Every measurement runs in a child process of its own, so its peak RSS
// (process.resourceUsage().maxRSS) is its own and not the parent's or an earlier case's:
//   decode paged    first load, cache written, residentBytes 0 (images streamed to the file)
//   decode memory   first load, cache: false, residentBytes Infinity (the whole set held)
//   read memory     readImageFolderCache into memory, then makeBatch of --batch random images
//   read paged      readImageFolderCache with residentBytes 0, then the same batches
// Reads follow the decode, so the cache file is in the OS page cache: paged numbers are those
// of a set that fits in RAM but not in the budget; a set larger than RAM reads at disk speed.
//
// A plain node script, not a test. `pnpm bench imageFolder` builds first and runs the small
// default (400 images, 10 s); the README's table is `pnpm bench imageFolder --sizes
// 400,1600,6400` (1 min 40 s on 2 cores, 1.7 GB of disk in the temporary folder).
// Flags: --sizes 400 (images per folder, a multiple of 4), --batch 32, --seconds 2 (per loader
// run), --out file.json (also write the JSON printed at the end).
import { spawnSync } from 'node:child_process';
import { link, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const self = fileURLToPath(import.meta.url);
const dist = new URL('../dist/index.js', import.meta.url).href;

if (args[0] === '--child') {
  await child(JSON.parse(args[1]));
} else {
  await main();
}

async function main() {
  const sizes = flag('sizes', '400').split(',').map(Number);
  const batch = Number(flag('batch', '32'));
  const seconds = Number(flag('seconds', '2'));
  const out = flag('out', undefined);
  if (sizes.some((n) => !Number.isSafeInteger(n) || n < 4 || n % 4 !== 0)) {
    throw new Error(`--sizes takes image counts that are multiples of 4 (4 classes): ${sizes}`);
  }
  const { writeShapesFolder, SHAPE_CLASSES } = await import(dist);
  const work = await mkdtemp(join(tmpdir(), 'shardline-bench-imagefolder-'));
  const machine = {
    cpus: cpus().length,
    model: cpus()[0]?.model.trim() ?? 'unknown',
    totalMemoryGiB: Number((totalmem() / 2 ** 30).toFixed(1)),
    node: process.version,
  };
  const started = new Date().toISOString();
  console.log(
    `image folders, 224x224x3 shapes, batch ${batch}, ${started}, node ${process.version}, ` +
      `${machine.cpus} cores (${machine.model}), ${machine.totalMemoryGiB} GiB`,
  );
  const results = [];
  try {
    // The largest folder is drawn once; smaller ones are hard links to its first files.
    const largest = Math.max(...sizes);
    const t0 = performance.now();
    const full = join(work, `shapes-${largest}`);
    await writeShapesFolder(full, { perClass: largest / 4, size: 224, seed: 1 });
    console.log(
      `wrote ${largest} PNGs in ${((performance.now() - t0) / 1000).toFixed(1)} s (not timed below)`,
    );
    const idle = run({ kind: 'idle' });
    console.log(`baseline: node with the package and sharp loaded, ${mb(idle.peakRss)} MB RSS`);
    for (const images of sizes) {
      const dir = images === largest ? full : join(work, `shapes-${images}`);
      if (dir !== full) {
        for (const name of SHAPE_CLASSES) {
          await mkdir(join(dir, name), { recursive: true });
          const files = (await readdir(join(full, name))).sort().slice(0, images / 4);
          for (const f of files) await link(join(full, name, f), join(dir, name, f));
        }
      }
      const cacheDir = join(work, `cache-${images}`);
      const common = { dir, cacheDir, batch, seconds };
      for (const kind of ['decode paged', 'decode memory', 'read memory', 'read paged']) {
        const r = run({ ...common, kind });
        results.push({ images, decodedBytes: images * 224 * 224 * 3, ...r });
      }
      if (dir !== full) await rm(dir, { recursive: true, force: true });
      await rm(cacheDir, { recursive: true, force: true });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }

  console.log(
    '\nimages  decoded MB  case           seconds  images/s  loader images/s  peak RSS MB',
  );
  for (const r of results) {
    console.log(
      `${String(r.images).padStart(6)}  ${mb(r.decodedBytes).padStart(10)}  ${r.kind.padEnd(13)}  ` +
        `${r.seconds.toFixed(2).padStart(7)}  ${r.imagesPerSecond.toFixed(0).padStart(8)}  ` +
        `${(r.loaderImagesPerSecond === undefined ? '-' : r.loaderImagesPerSecond.toFixed(0)).padStart(15)}  ` +
        `${mb(r.peakRss).padStart(11)}`,
    );
  }
  const json = { benchmark: 'imageFolder', date: started, machine, batch, results };
  console.log(`\n${JSON.stringify(json)}`);
  if (out) await writeFile(out, `${JSON.stringify(json, null, 2)}\n`);
}

function mb(bytes) {
  return (bytes / 1e6).toFixed(0);
}

/** Runs one case in a fresh process and returns what it printed (one JSON line). */
function run(spec) {
  const r = spawnSync(process.execPath, [self, '--child', JSON.stringify(spec)], {
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`${spec.kind} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}

async function child(spec) {
  const d = await import(dist);
  // Loaded in every case, so the baselines compare.
  await import('sharp');
  const peakRss = () => process.resourceUsage().maxRSS * 1024;
  const options = { validationSplit: 0.2, seed: 1, progress: 'none' };
  if (spec.kind === 'idle') {
    console.log(JSON.stringify({ kind: 'idle', peakRss: peakRss() }));
    return;
  }
  const start = performance.now();
  let loaded;
  if (spec.kind === 'decode paged') {
    loaded = await d.loadImageFolder(spec.dir, {
      ...options,
      cacheDir: spec.cacheDir,
      residentBytes: 0,
    });
  } else if (spec.kind === 'decode memory') {
    loaded = await d.loadImageFolder(spec.dir, {
      ...options,
      cache: false,
      residentBytes: Number.POSITIVE_INFINITY,
    });
  } else {
    const fingerprint = (await readdir(spec.cacheDir))
      .find((f) => f.endsWith('.bin'))
      .slice(0, -'.bin'.length);
    loaded = await d.readImageFolderCache(d.imageFolderCachePath(fingerprint, spec), fingerprint, {
      residentBytes: spec.kind === 'read paged' ? 0 : Number.POSITIVE_INFINITY,
    });
  }
  const seconds = (performance.now() - start) / 1000;
  const images = loaded.train.count + loaded.test.count;
  const paged = !(loaded.train.images instanceof Uint8Array);
  if (paged !== spec.kind.endsWith('paged')) throw new Error(`${spec.kind}: paged is ${paged}`);
  let loaderImagesPerSecond;
  if (spec.kind.startsWith('read')) {
    // Random batches over the training set, as an epoch's sampler draws them.
    const order = d.epochOrder(loaded.train.count, 7, 0);
    let at = 0;
    const next = () => {
      if (at + spec.batch > order.length) at = 0;
      const b = d.makeBatch(loaded.train, order.subarray(at, at + spec.batch));
      at += spec.batch;
      return b;
    };
    for (let i = 0; i < 3; i++) next();
    let made = 0;
    const t = performance.now();
    while (performance.now() - t < spec.seconds * 1000) {
      next();
      made += spec.batch;
    }
    loaderImagesPerSecond = made / ((performance.now() - t) / 1000);
  }
  d.closeImageSet(loaded.train);
  d.closeImageSet(loaded.test);
  console.log(
    JSON.stringify({
      kind: spec.kind,
      seconds,
      imagesPerSecond: images / seconds,
      ...(loaderImagesPerSecond === undefined ? {} : { loaderImagesPerSecond }),
      paged,
      peakRss: peakRss(),
    }),
  );
}
