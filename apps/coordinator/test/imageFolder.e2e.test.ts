import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeShapesFolder } from '@shardline/datasets';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killStarted, startProcess, type TestProcess, within, workerCli } from './processes.js';
import { cliPath, runCli } from './runCli.js';

let root: string;
/** The shapes folder the remote-worker tests train on (4 classes of 150 32x32 RGB PNGs). */
let shapes: string;
/** The same kind of folder with train/ and test/ (30 test images a class). */
let shapesSplit: string;
/** The coordinator's image-folder cache (XDG_CACHE_HOME), shared by its runs. */
let coordinatorCache: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'shardline-folder-e2e-'));
  shapes = join(root, 'shapes');
  coordinatorCache = join(root, 'coordinator-cache');
  await writeShapesFolder(shapes, { perClass: 150, size: 32, seed: 3 });
  shapesSplit = join(root, 'shapes-split');
  await writeShapesFolder(shapesSplit, { perClass: 150, size: 32, seed: 3, testFraction: 0.2 });
});
afterAll(async () => {
  killStarted();
  await rm(root, { recursive: true, force: true });
});

const RUN_MS = 120_000;

/** Flags of a short, deterministic run on a shapes folder (split 80/20 unless it has test/). */
function folderFlags(dataset: string, out: string, epochs: number, split = true): string[] {
  return [
    'train',
    '--model',
    'fast-cnn',
    '--dataset',
    dataset,
    ...(split ? ['--validation-split', '0.2'] : []),
    '--epochs',
    String(epochs),
    '--seed',
    '11',
    '--listen',
    '127.0.0.1:0',
    '--log-format',
    'json',
    '--out',
    out,
  ];
}

describe('training on an image folder', () => {
  it('trains fast-cnn with 2 local workers over gRPC to >= 0.9; evaluate and predict agree with the run', async () => {
    const out = join(root, 'local-run');
    const run = await runCli([...folderFlags(shapesSplit, out, 6, false), '--local-workers', '2'], {
      XDG_CACHE_HOME: coordinatorCache,
    });
    expect(run.code, run.stderr).toBe(0);
    const events = run.events();
    expect(events[0]).toMatchObject({
      event: 'started',
      dataset: 'shapes-split',
      train_samples: 480,
      test_samples: 120,
    });
    const done = events.at(-1)!;
    expect(done.event).toBe('done');
    const accuracy = done.test_accuracy as number;
    expect(accuracy).toBeGreaterThanOrEqual(0.9);

    // evaluate, on the dataset the saved model remembers: its test/ folder, the run's test set.
    const evaluation = await runCli(['evaluate', '--model', out, '--json']);
    expect(evaluation.code, evaluation.stderr).toBe(0);
    const report = JSON.parse(evaluation.stdout);
    expect(report.count).toBe(120);
    expect(report.accuracy).toBeCloseTo(accuracy, 10);
    const summary = JSON.parse(await readFile(join(out, 'summary.json'), 'utf8'));
    expect(report.confusionMatrix).toEqual(summary.evaluation.confusionMatrix);

    // predict, image by image over the same 120 files: the same accuracy, to the image.
    const images: string[] = [];
    for (const name of ['circle', 'cross', 'square', 'triangle']) {
      for (const file of await readdir(join(shapesSplit, 'test', name))) {
        images.push(join(shapesSplit, 'test', name, file));
      }
    }
    const predicted = await runCli(['predict', '--model', out, '--json', ...images]);
    expect(predicted.code, predicted.stderr).toBe(0);
    const answers = JSON.parse(predicted.stdout) as Array<{
      path: string;
      predictions: Array<{ className: string; probability: number }>;
    }>;
    expect(answers.map((a) => a.path)).toEqual(images);
    for (const answer of answers) {
      expect(answer.predictions).toHaveLength(3);
      const sum = answer.predictions.reduce((total, p) => total + p.probability, 0);
      expect(sum).toBeLessThanOrEqual(1 + 1e-6);
    }
    const right = answers.filter((a) => a.predictions[0]!.className === a.path.split('/').at(-2));
    expect(right.length / answers.length).toBeCloseTo(accuracy, 10);
  });
});

/** A coordinator waiting for one remote worker, on a copy of the shapes folder. */
async function remoteRun(
  name: string,
  epochs = 2,
): Promise<{ coordinator: TestProcess; out: string; folder: string; listen: string }> {
  const folder = join(root, `${name}-data`, 'shapes');
  await cp(shapes, folder, { recursive: true });
  const out = join(root, name);
  const coordinator = startProcess(
    cliPath,
    [...folderFlags(folder, out, epochs), '--local-workers', '0', '--min-workers', '1'],
    { env: { XDG_CACHE_HOME: coordinatorCache } },
  );
  const started = await within(coordinator.event('started'), RUN_MS, `${name}: coordinator start`);
  return { coordinator, out, folder, listen: String(started.listen) };
}

/** A remote worker in an empty working directory with an empty cache of its own. */
async function emptyWorker(
  name: string,
  listen: string,
  extra: string[] = [],
): Promise<TestProcess> {
  const home = join(root, `${name}-home`);
  await mkdir(home, { recursive: true });
  return startProcess(
    workerCli,
    [
      '--coordinator',
      listen,
      '--name',
      name,
      '--backend',
      'wasm',
      '--connect-timeout',
      '20',
      ...extra,
    ],
    { cwd: home, env: { XDG_CACHE_HOME: join(home, 'cache'), HOME: home } },
  );
}

describe('a remote worker without the data', () => {
  it('fetches the folder from the coordinator and ends byte-equal to a worker that read the folder itself', async () => {
    // A: the folder disappears from this machine once the coordinator has decoded it, so the
    // worker (same machine, other cache) can only get it over gRPC.
    const a = await remoteRun('fetch-a');
    await rename(a.folder, `${a.folder}-moved`);
    const fetcher = await emptyWorker('fetcher', a.listen);
    expect(await within(a.coordinator.closed, RUN_MS, 'run A'), a.coordinator.stderr()).toBe(0);
    expect(await fetcher.closed, fetcher.stderr()).toBe(0);
    expect(fetcher.stderr()).toContain('fetching the image folder from the coordinator');
    const fetchedCache = join(root, 'fetcher-home', 'cache', 'shardline', 'image-folders');
    const [file] = await readdir(fetchedCache);
    const coordinatorFile = join(coordinatorCache, 'shardline', 'image-folders', file!);
    expect(
      Buffer.compare(await readFile(join(fetchedCache, file!)), await readFile(coordinatorFile)),
    ).toBe(0);

    // B: the same run, the worker decoding its own copy of the folder.
    const b = await remoteRun('fetch-b');
    const reader = await emptyWorker('reader', b.listen);
    expect(await within(b.coordinator.closed, RUN_MS, 'run B'), b.coordinator.stderr()).toBe(0);
    expect(await reader.closed, reader.stderr()).toBe(0);
    expect(reader.stderr()).toContain('image folder loaded from a local copy');

    const weights = (out: string) => readFile(join(out, 'model', 'weights.bin'));
    expect(Buffer.compare(await weights(a.out), await weights(b.out))).toBe(0);
  });

  it('refuses a worker whose copy of the folder differs, and one told not to fetch', async () => {
    const run = await remoteRun('changed');
    // One image replaced by another class's: same names, other bytes.
    const victim = join(run.folder, 'circle', 'circle-0007.png');
    const square = await readFile(join(run.folder, 'square', 'square-0007.png'));
    await writeFile(victim, square);
    const changed = await emptyWorker('changed-copy', run.listen);
    expect(await within(changed.closed, RUN_MS, 'changed worker')).toBe(1);
    expect(changed.stderr()).toContain(
      `The image folder ${run.folder} on this worker differs from the coordinator's`,
    );
    expect(changed.stderr()).toContain('Make the two folders identical');

    await rename(run.folder, `${run.folder}-moved`);
    const noFetch = await emptyWorker('no-fetch', run.listen, ['--no-fetch-data']);
    expect(await within(noFetch.closed, RUN_MS, 'no-fetch worker')).toBe(1);
    expect(noFetch.stderr()).toContain('--no-fetch-data forbids fetching it from the coordinator');
    run.coordinator.child.kill('SIGKILL');
    await run.coordinator.closed;
  });
});
