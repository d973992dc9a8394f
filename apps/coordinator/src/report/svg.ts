/**
 * Renders Vega-Lite specs to SVG in Node with the real library: Vega-Lite compiles the spec to
 * Vega, a headless Vega view (`renderer: 'none'`) lays it out and writes SVG. No canvas is
 * needed: without the optional `canvas` package Vega estimates text widths, which is also what
 * makes the output the same bytes on every machine for the same record.
 *
 * Vega and Vega-Lite are imported on first use, so commands that draw nothing (train's start,
 * evaluate, predict) do not pay for loading them.
 */
import { ShardlineError, toShardlineError } from '@shardline/core';
import type { TopLevelSpec } from 'vega-lite';

/** Options of {@link renderSvg}. */
export interface RenderOptions {
  /**
   * Receives Vega-Lite's and Vega's warnings (a spec they had to correct). Default: dropped, so
   * they never interleave with a run's output; tests collect them to keep the specs clean.
   */
  onWarning?: (message: string) => void;
}

/**
 * Renders one Vega-Lite spec (with its data attached) to an SVG document.
 *
 * @example
 * ```ts
 * const svg = await renderSvg(withData(lossChart(), chartData(run)));
 * await writeFile('loss.svg', svg);
 * ```
 */
export async function renderSvg(spec: TopLevelSpec, options: RenderOptions = {}): Promise<string> {
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const onWarning = options.onWarning ?? (() => {});
  // Both libraries log to the console by default; a handler keeps them off the run's streams.
  const logger = vega.logger(vega.Warn, 'warn', (_method, _level, args) =>
    onWarning(args.map(String).join(' ')),
  );
  let view: InstanceType<typeof vega.View> | undefined;
  try {
    const compiled = vegaLite.compile(spec, { logger }).spec;
    view = new vega.View(vega.parse(compiled), { renderer: 'none', logger });
    return await view.toSVG();
  } catch (error) {
    const title = typeof spec.title === 'string' ? spec.title : 'a chart';
    throw new ShardlineError(
      'INTERNAL',
      `Vega could not draw ${title}: ${toShardlineError(error).message}. This is a bug in Shardline's chart specs; please report it with the run's events.jsonl.`,
      { cause: error },
    );
  } finally {
    view?.finalize();
  }
}
