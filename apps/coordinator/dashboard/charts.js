// The page's charts: the report's own Vega-Lite specs (GET api/charts, made by
// src/report/charts.ts), compiled here by the same Vega-Lite version that renders report.html,
// and drawn by Vega. The specs read named datasets (steps, epochs, confusion); rows go into
// them as the run reports them, so a chart grows without being rebuilt.
//
// `vega` and `vegaLite` are the globals of the UMD bundles the coordinator serves under
// vendor/ (index.html loads them before this module).

const { vega, vegaLite } = globalThis;

/** Whether the chart libraries loaded (they are served by the coordinator, never a CDN). */
export const chartsAvailable = () => Boolean(vega && vegaLite);

/**
 * Builds every chart of `described` (the api/charts answer) into the element of `root` whose
 * `data-chart` is its name. Resolves with the set, drawn and empty.
 */
export async function createCharts(root, described) {
  const charts = [];
  for (const chart of described.charts) {
    const container = root.querySelector(`[data-chart="${chart.name}"]`);
    if (!container) continue;
    container.replaceChildren();
    const compiled = vegaLite.compile(chart.spec).spec;
    // Laid out again on every update: the axes' labels and the legend arrive with the rows,
    // after the first (empty) layout. The report renders once, with its rows, and needs no
    // such thing.
    const autosize = compiled.autosize;
    compiled.autosize = {
      ...(typeof autosize === 'string' ? { type: autosize } : (autosize ?? { type: 'pad' })),
      resize: true,
    };
    const runtime = vega.parse(compiled);
    // SVG rather than canvas: crisp at any zoom, and readable by screen readers (Vega labels
    // the SVG with the chart's title and axes).
    const view = new vega.View(runtime, { container, renderer: 'svg', hover: true });
    charts.push({ name: chart.name, view, datasets: new Set(chart.datasets) });
  }
  await Promise.all(charts.map((c) => c.view.runAsync()));
  return createChartSet(charts);
}

/**
 * The views behind one API: rows are queued per dataset and applied to every view that reads
 * it, then each touched view runs once ({@link flush}); many steps cost one redraw.
 */
function createChartSet(charts) {
  /** dataset -> { replace?: rows, insert: rows } waiting for the next flush */
  const pending = new Map();
  const queue = (dataset) => {
    let entry = pending.get(dataset);
    if (!entry) {
      entry = { replace: undefined, insert: [] };
      pending.set(dataset, entry);
    }
    return entry;
  };
  return {
    /** The Vega views by chart name (the browser console's and the tests' way in). */
    views: Object.fromEntries(charts.map((c) => [c.name, c.view])),
    /** Replaces every row of `dataset` (a snapshot, a new confusion matrix). */
    replace(dataset, rows) {
      const entry = queue(dataset);
      entry.replace = rows;
      entry.insert = [];
    },
    /** Adds rows to `dataset` (steps, epoch ends). */
    insert(dataset, rows) {
      queue(dataset).insert.push(...rows);
    },
    /** Whether anything waits for {@link flush}. */
    get dirty() {
      return pending.size > 0;
    },
    /** Applies what is queued and redraws the views it touched. */
    async flush() {
      if (pending.size === 0) return;
      const work = [...pending];
      pending.clear();
      const touched = new Set();
      for (const chart of charts) {
        for (const [dataset, { replace, insert }] of work) {
          if (!chart.datasets.has(dataset)) continue;
          // Each view gets its own copies: Vega's transforms write fields into the rows.
          const copy = (rows) => rows.map((row) => ({ ...row }));
          const changes = vega.changeset();
          if (replace) changes.remove(vega.truthy).insert(copy(replace));
          if (insert.length > 0) changes.insert(copy(insert));
          chart.view.change(dataset, changes);
          touched.add(chart.view);
        }
      }
      await Promise.all([...touched].map((view) => view.runAsync()));
    },
  };
}
