// The live dashboard: the run's state from the coordinator, kept current by server-sent events.
//
// GET api/events streams a `snapshot` first (the whole run, as GET api/state), then deltas:
// `step`, `epoch_end`, `worker`, `state` (src/dashboard/runState.ts `RunDelta`). The page keeps
// the snapshot and applies each delta to it; text redraws at most once a frame, charts at most
// every CHART_INTERVAL_MS (a redraw of every chart per step would compete with training for the
// same cores). A dropped stream is reopened: EventSource retries by itself, and when it gives up
// the page re-reads api/state and opens a new one. Every (re)connection starts from a snapshot,
// so nothing is missed.

import { chartsAvailable, createCharts } from './charts.js';
import {
  renderConnection,
  renderJob,
  renderMisclassified,
  renderStatus,
  renderWorkers,
} from './render.js';

/** Milliseconds between two chart redraws while steps stream in. */
const CHART_INTERVAL_MS = 500;
/** Milliseconds before reopening a stream the browser gave up on. */
const RECONNECT_MS = 2000;
/**
 * Train points the page keeps before starting again from a fresh snapshot, whose series the
 * coordinator keeps bounded (10,000 points at most, merged as the run grows): memory and
 * redraws stay bounded too.
 */
const MAX_TRAIN_POINTS = 20_000;
const FINISHED = new Set(['done', 'failed', 'stopped']);

const page = {
  /** The run, as the last snapshot plus the deltas since. */
  run: undefined,
  /** The chart set once built (createCharts), and the build in progress. */
  charts: undefined,
  building: undefined,
  source: undefined,
  /** What changed since the last redraw. */
  dirty: { status: false, workers: false, misclassified: false },
  frame: 0,
  chartTimer: 0,
};

// For the browser's console (and the browser test): the run and the Vega views.
globalThis.shardlineDashboard = {
  get run() {
    return page.run;
  },
  get views() {
    return page.charts?.views ?? {};
  },
};

/** Schedules a redraw of what `parts` name. */
function invalidate(...parts) {
  for (const part of parts) page.dirty[part] = true;
  if (page.frame === 0) page.frame = requestAnimationFrame(redraw);
}

function redraw() {
  page.frame = 0;
  const { run, dirty } = page;
  if (!run) return;
  if (dirty.status) {
    renderStatus(run);
    renderJob(run);
  }
  if (dirty.workers) renderWorkers(run.workers);
  if (dirty.misclassified) renderMisclassified(run);
  page.dirty = { status: false, workers: false, misclassified: false };
}

/** Redraws the charts soon (at most every CHART_INTERVAL_MS). */
function scheduleCharts() {
  if (page.chartTimer !== 0 || !page.charts) return;
  page.chartTimer = setTimeout(async () => {
    page.chartTimer = 0;
    try {
      await page.charts?.flush();
    } catch (error) {
      console.warn('A chart could not be redrawn:', error);
    }
  }, CHART_INTERVAL_MS);
}

/** Fills every chart from the run as it stands (after a snapshot, or once they are built). */
function fillCharts() {
  const { charts, run } = page;
  if (!charts || !run) return;
  charts.replace('steps', run.train.points);
  charts.replace('epochs', run.test);
  // The server sends the heat map's cells already shaped (the report's confusionCells).
  charts.replace('confusion', run.confusion?.cells ?? []);
  document.getElementById('confusion-section').hidden = !run.confusion;
  scheduleCharts();
}

/**
 * Builds the charts once the run's size is known (the `started` event): api/charts sizes their
 * smoothing and point density for the run's planned steps.
 */
async function ensureCharts() {
  if (page.charts || page.building || !page.run?.job) return;
  const status = document.getElementById('charts-status');
  if (!chartsAvailable()) {
    status.textContent =
      'The charts could not load: the coordinator did not serve vendor/vega.min.js and vendor/vega-lite.min.js. Reinstall @shardline/coordinator.';
    status.hidden = false;
    return;
  }
  page.building = (async () => {
    try {
      const response = await fetch('api/charts', { cache: 'no-store' });
      if (!response.ok) throw new Error(`api/charts answered ${response.status}`);
      page.charts = await createCharts(document, await response.json());
      status.hidden = true;
      fillCharts();
    } catch (error) {
      status.textContent = `The charts could not be drawn: ${error.message}. Reload the page to try again.`;
      status.hidden = false;
      console.warn(error);
    } finally {
      page.building = undefined;
    }
  })();
  await page.building;
}

/** Takes a whole run (a snapshot event, or api/state). */
function takeSnapshot(run) {
  page.run = run;
  invalidate('status', 'workers', 'misclassified');
  fillCharts();
  void ensureCharts();
}

/**
 * Learns the job from api/state when the stream's snapshot came before the run started: only
 * the job's fields are taken, since the events since that snapshot are already applied.
 */
async function learnJob() {
  try {
    const response = await fetch('api/state', { cache: 'no-store' });
    if (!response.ok || !page.run) return;
    const fresh = await response.json();
    if (!fresh.job || page.run.job) return;
    const { job, class_names, epochs, steps_per_epoch } = fresh;
    Object.assign(page.run, { job, class_names, epochs, steps_per_epoch });
    invalidate('status');
    void ensureCharts();
  } catch {
    // The next state event tries again.
  }
}

/** Starts again from a fresh snapshot: a new stream's snapshot and its events agree. */
function resync() {
  page.source?.close();
  connect();
}

/** Re-reads api/state; resolves whether it could. */
async function refreshState() {
  try {
    const response = await fetch('api/state', { cache: 'no-store' });
    if (!response.ok) return false;
    takeSnapshot(await response.json());
    return true;
  } catch {
    return false;
  }
}

/** The deltas, each applied to the run as /api/state would show it afterwards. */
const apply = {
  step(data) {
    const run = page.run;
    const { epoch_images_per_second, eta, ...point } = data;
    run.train.points.push(point);
    run.train.total++;
    Object.assign(run, {
      epoch: point.epoch,
      step: point.step,
      step_in_epoch: point.step_in_epoch,
      steps_per_epoch: point.steps_per_epoch,
      eta,
      images_per_second: epoch_images_per_second,
    });
    if (run.train.points.length > MAX_TRAIN_POINTS) {
      resync();
      return;
    }
    page.charts?.insert('steps', [point]);
    invalidate('status');
    scheduleCharts();
  },
  epoch_end(data) {
    const run = page.run;
    const { confusion, misclassified, ...point } = data;
    run.test.push(point);
    if (confusion) {
      run.confusion = confusion;
      page.charts?.replace('confusion', confusion.cells);
      document.getElementById('confusion-section').hidden = false;
    }
    if (misclassified) {
      run.misclassified = misclassified;
      invalidate('misclassified');
    }
    page.charts?.insert('epochs', [point]);
    invalidate('status');
    scheduleCharts();
  },
  worker(data) {
    const workers = page.run.workers;
    const i = workers.findIndex((w) => w.id === data.id);
    if (i >= 0) workers[i] = data;
    else workers.push(data);
    invalidate('workers');
  },
  state(data) {
    const run = page.run;
    run.state = data.state;
    if (data.error) run.error = data.error;
    invalidate('status');
    // Sent when the run starts, among other times: the job (and so the charts) is known now.
    if (!run.job) void learnJob();
    if (FINISHED.has(data.state)) finish();
  },
};

/** The run is over: the coordinator closes its server, so stop listening and keep the page. */
function finish() {
  page.source?.close();
  page.source = undefined;
  renderConnection('run ended: this page keeps its last state', false);
}

function connect() {
  const source = new EventSource('api/events');
  page.source = source;
  source.addEventListener('open', () => renderConnection('live', true));
  source.addEventListener('snapshot', (e) => takeSnapshot(JSON.parse(e.data)));
  for (const kind of Object.keys(apply)) {
    source.addEventListener(kind, (e) => {
      if (page.run) apply[kind](JSON.parse(e.data));
    });
  }
  source.addEventListener('error', () => {
    if (page.source !== source) return;
    if (page.run && FINISHED.has(page.run.state)) {
      finish();
      return;
    }
    renderConnection('reconnecting…', false);
    // CONNECTING: the browser retries by itself. CLOSED: it gave up (an error status, a
    // proxy's page); re-read the state, then open a new stream.
    if (source.readyState === EventSource.CLOSED) {
      page.source = undefined;
      setTimeout(async function retry() {
        if (await refreshState()) {
          if (!FINISHED.has(page.run.state)) connect();
        } else {
          setTimeout(retry, RECONNECT_MS);
        }
      }, RECONNECT_MS);
    }
  });
}

connect();
