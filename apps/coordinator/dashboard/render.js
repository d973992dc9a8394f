// The page's text parts, drawn from the run as /api/state describes it (src/dashboard/runState.ts
// `RunSnapshot`): the run's position and numbers, the job, the workers table and the grid of
// misclassified test images. Everything from the run is set as text, never parsed as HTML.

import {
  formatCount,
  formatDuration,
  formatLoss,
  formatPercent,
  formatSeconds,
  isNumber,
} from './format.js';

const $ = (id) => document.getElementById(id);

/**
 * Sets an element's text, its machine-readable value (what tests and scripts read), and a
 * smaller line under it when `sub` is given.
 */
function show(id, text, value, sub) {
  const element = $(id);
  if (value !== undefined) element.dataset.value = String(value);
  // Unchanged text is left alone: rewriting it would make screen readers announce the live
  // regions (the run's state) again at every step.
  if (element.textContent === text + (sub ?? '')) return;
  element.textContent = text;
  if (sub) {
    const small = document.createElement('span');
    small.className = 'sub';
    small.textContent = sub;
    element.append(small);
  }
}

/** What a run's state reads as. */
const STATE_TEXT = {
  waiting: 'waiting',
  training: 'training',
  evaluating: 'evaluating',
  done: 'done',
  failed: 'failed',
  stopped: 'stopped',
};

/** The run's position, speed and latest results. */
export function renderStatus(run) {
  const state = STATE_TEXT[run.state] ?? run.state;
  show('state', state, run.state);
  document.body.dataset.state = run.state;
  show(
    'epoch',
    run.epochs > 0 ? `${formatCount(run.epoch)} / ${formatCount(run.epochs)}` : '–',
    run.epoch,
  );
  const planned = run.epochs * run.steps_per_epoch;
  show(
    'step',
    planned > 0 ? `${formatCount(run.step)} / ${formatCount(planned)}` : formatCount(run.step),
    run.step,
  );
  const finished = ['done', 'failed', 'stopped'].includes(run.state);
  show('eta-run', finished ? '–' : formatDuration(run.eta?.run_seconds));
  show('eta-epoch', finished ? '–' : formatDuration(run.eta?.epoch_seconds));
  show(
    'throughput',
    isNumber(run.images_per_second) ? formatCount(run.images_per_second) : '–',
    run.images_per_second ?? '',
  );
  const last = run.test.at(-1);
  show(
    'test-accuracy',
    last ? formatPercent(last.test_accuracy, 2) : '–',
    last?.test_accuracy ?? '',
    last ? `after epoch ${last.epoch}` : undefined,
  );
  const latest = run.train.points.at(-1);
  show('train-loss', latest ? formatLoss(latest.running_loss) : '–', latest?.running_loss ?? '');

  const progress = $('epoch-progress');
  progress.max = Math.max(1, run.steps_per_epoch);
  progress.value = finished ? progress.max : run.step_in_epoch;

  $('evaluation-note').hidden = Boolean(run.confusion || run.misclassified);

  const error = $('error');
  error.hidden = run.state !== 'failed';
  error.textContent = run.error ? `The run failed: ${run.error}` : 'The run failed.';
  const result = $('result');
  result.hidden = run.state !== 'done';
  const out = run.job?.out;
  result.textContent = out
    ? `Finished: the model, summary.json and report.html are in ${out}.`
    : 'Finished.';
}

/** The header's line about the job: model, data, mode, batch, optimizer. */
export function renderJob(run) {
  const job = run.job;
  const element = $('job');
  if (!job) {
    element.textContent = 'Preparing the run: loading the data and building the model.';
    return;
  }
  const parts = [
    `${job.model} on ${job.dataset}`,
    job.mode === 'distributed' ? `distributed (${job.exchange ?? 'star'})` : 'in-process',
    `${formatCount(job.parameters)} parameters`,
    `batch ${formatCount(job.batch_size)}`,
    `${job.optimizer} ${job.learning_rate}`,
    `${formatCount(job.train_samples)} train / ${formatCount(job.test_samples)} test images`,
  ];
  element.textContent = parts.join(' · ');
  document.title = `${STATE_TEXT[run.state] ?? run.state} · ${job.model} · Shardline`;
}

/** What a worker's state reads as: one that left stays in the table, as gone. */
const WORKER_STATE_TEXT = { attached: 'training', left: 'gone', finished: 'finished' };

/** A cell with `text`. */
function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/** The workers table: one row per worker that ever joined, in joining order. */
export function renderWorkers(workers) {
  const body = $('workers').tBodies[0];
  const rows = workers.map((w) => {
    const tr = document.createElement('tr');
    tr.dataset.worker = w.name;
    tr.dataset.state = w.state;
    const share = isNumber(w.share)
      ? `${formatPercent(w.share, 0)}${isNumber(w.share_samples) ? ` (${formatCount(w.share_samples)} img)` : ''}`
      : '–';
    const name = document.createElement('th');
    name.scope = 'row';
    name.textContent = w.name;
    const state = cell(WORKER_STATE_TEXT[w.state] ?? w.state, 'state');
    if (w.reason) state.title = w.reason;
    tr.append(
      name,
      cell(w.hostname ?? '–'),
      cell(w.backend ?? '–'),
      cell(share, 'number'),
      cell(isNumber(w.last_step) ? formatCount(w.last_step) : '–', 'number'),
      cell(formatSeconds(w.last_step_seconds), 'number'),
      state,
      cell(w.state === 'attached' ? '' : (w.reason ?? ''), 'reason'),
    );
    return tr;
  });
  body.replaceChildren(...rows);
  $('no-workers').hidden = workers.length > 0;
}

/**
 * The grid of misclassified test images: each image (encoded by the coordinator from its own
 * test set), its true class and what the model predicted, with how sure it was.
 */
export function renderMisclassified(run) {
  const section = $('misclassified-section');
  const grid = $('misclassified');
  const wrong = run.misclassified;
  section.hidden = !wrong;
  if (!wrong) return;
  const names = run.class_names;
  const name = (i) => names[i] ?? `class ${i}`;
  $('misclassified-caption').textContent =
    wrong.samples.length === 0
      ? `Epoch ${wrong.epoch}: no test image was misclassified.`
      : `Epoch ${wrong.epoch}: the first ${wrong.samples.length} misclassified test images, by test-set index.`;
  const items = wrong.samples.map((m) => {
    const li = document.createElement('li');
    li.dataset.index = String(m.index);
    const figure = document.createElement('figure');
    const img = document.createElement('img');
    img.src = `api/test-images/${m.index}.png`;
    img.alt = `Test image ${m.index}: a ${name(m.label)}, predicted ${name(m.predicted)}`;
    img.width = 56;
    img.height = 56;
    // Without a local copy of the test set the coordinator has no images: keep the labels.
    img.addEventListener('error', () => img.replaceWith(placeholder()), { once: true });
    const caption = document.createElement('figcaption');
    const truth = document.createElement('span');
    truth.className = 'truth';
    truth.textContent = name(m.label);
    const predicted = document.createElement('span');
    predicted.className = 'predicted';
    predicted.textContent = `${name(m.predicted)} ${formatPercent(m.confidence, 0)}`;
    caption.append(truth, predicted);
    figure.append(img, caption);
    li.append(figure);
    return li;
  });
  grid.replaceChildren(...items);
}

/** Stands in for an image the coordinator could not serve. */
function placeholder() {
  const span = document.createElement('span');
  span.className = 'no-image';
  span.textContent = 'no image';
  return span;
}

/** The live connection's state, in the header. */
export function renderConnection(text, live) {
  const element = $('connection');
  element.textContent = text;
  element.dataset.live = String(live);
}
