/**
 * What a Shardline CLI accepts, read from its own `--help`: the truth that deployment files are
 * checked against. Nothing here lists flags by hand, so a flag renamed in the CLI and not in a
 * manifest (or the other way round) fails the check.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** One option, as `--help` shows it. */
export interface OptionSpec {
  /** `--listen`; `--no-download` for negations, as users type them. */
  long: string;
  short?: string;
  /** `<value>` (required) or `[value]` (optional) after the flag. */
  value: 'none' | 'required' | 'optional';
  /** `(choices: "a", "b")`. */
  choices?: string[];
  /** `(env: NAME)`. */
  env?: string;
}

/** One command (the program itself, or a subcommand such as `train` or `doctor`). */
export interface CommandSpec {
  name: string;
  options: Map<string, OptionSpec>;
  /** Variables named by `(env: NAME)`, with their option. */
  envOptions: Map<string, OptionSpec>;
  /** Every SHARDLINE_* name anywhere in the help text (descriptions mention some that no option carries, such as SHARDLINE_DATA_DIR read by the dataset loader). */
  mentionedEnv: Set<string>;
  subcommands: Map<string, CommandSpec>;
  /** How a switch's variable is written, when the help says (`switches take 1/true/yes/on or 0/false/no/off`). */
  switchWords?: string[];
}

/** The two CLIs. */
export type CliName = 'shardline-coordinator' | 'shardline-worker';

/** The built CLIs of this checkout (the root test script builds first). */
export const CLI_PATHS: Record<CliName, string> = {
  'shardline-coordinator': fileURLToPath(
    new URL('../../../apps/coordinator/dist/cli.js', import.meta.url),
  ),
  'shardline-worker': fileURLToPath(new URL('../../../apps/worker/dist/cli.js', import.meta.url)),
};

const OPTION_LINE =
  /^ {2}(?:(-[A-Za-z]), )?(--[A-Za-z0-9][\w-]*)(?: (<[^>]+>|\[[^\]]+\]))?(?: {2,}(.*))?$/;
const COMMAND_LINE = /^ {2}([a-z][\w-]*)(?: \[options\])?(?: [<[][^\s]*[>\]])*(?: {2,}.*)?$/;

/**
 * Parses one command's `--help` text. Exported for the checker's own tests, which feed it
 * small inline help texts.
 */
export function parseHelp(
  name: string,
  help: string,
): Omit<CommandSpec, 'subcommands'> & {
  subcommandNames: string[];
} {
  const options = new Map<string, OptionSpec>();
  const envOptions = new Map<string, OptionSpec>();
  const subcommandNames: string[] = [];
  let section: 'none' | 'options' | 'commands' = 'none';
  let current: { spec: OptionSpec; description: string } | undefined;
  const finish = () => {
    if (!current) return;
    const { spec, description } = current;
    const choices = /choices: ((?:"[^"]*"(?:, )?)+)/.exec(description);
    if (choices) spec.choices = [...choices[1]!.matchAll(/"([^"]*)"/g)].map((m) => m[1]!);
    const env = /\benv: ([A-Z][A-Z0-9_]*)/.exec(description);
    if (env) {
      spec.env = env[1]!;
      envOptions.set(spec.env, spec);
    }
    options.set(spec.long, spec);
    current = undefined;
  };
  for (const line of help.split('\n')) {
    if (/^Options:\s*$/.test(line)) {
      finish();
      section = 'options';
      continue;
    }
    if (/^Commands:\s*$/.test(line)) {
      finish();
      section = 'commands';
      continue;
    }
    if (/^\S/.test(line)) {
      finish();
      section = 'none';
      continue;
    }
    if (section === 'options') {
      const match = OPTION_LINE.exec(line);
      if (match) {
        finish();
        const [, short, long, value, description] = match;
        current = {
          spec: {
            long: long!,
            ...(short ? { short } : {}),
            value: !value ? 'none' : value.startsWith('<') ? 'required' : 'optional',
          },
          description: description ?? '',
        };
      } else if (current && line.trim() !== '') {
        // A wrapped description: commander breaks lines at spaces only.
        current.description += ` ${line.trim()}`;
      }
    } else if (section === 'commands') {
      const match = COMMAND_LINE.exec(line);
      if (match && match[1] !== 'help') subcommandNames.push(match[1]!);
    }
  }
  finish();
  const mentionedEnv = new Set(
    [...help.matchAll(/\bSHARDLINE_[A-Z0-9][A-Z0-9_]*/g)].map((m) => m[0]),
  );
  const switches = /switches take ([\w/]+) or ([\w/]+)/.exec(help.replace(/\s+/g, ' '));
  return {
    name,
    options,
    envOptions,
    mentionedEnv,
    subcommandNames,
    ...(switches ? { switchWords: `${switches[1]}/${switches[2]}`.split('/') } : {}),
  };
}

function helpOf(cli: CliName, command: string[]): string {
  // COLUMNS is not read by commander when stdout is a pipe; the width is 80 either way.
  return execFileSync(process.execPath, [CLI_PATHS[cli], ...command, '--help'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Builds a spec from a help reader (the real CLI, or inline texts in tests). */
export function buildSpec(name: string, read: (command: string[]) => string): CommandSpec {
  const load = (path: string[]): CommandSpec => {
    const parsed = parseHelp(path.length === 0 ? name : path.join(' '), read(path));
    const subcommands = new Map<string, CommandSpec>();
    for (const sub of parsed.subcommandNames) subcommands.set(sub, load([...path, sub]));
    const { subcommandNames: _, ...rest } = parsed;
    return { ...rest, subcommands };
  };
  return load([]);
}

const cache = new Map<CliName, CommandSpec>();

/** The spec of a built CLI, from its `--help` and each subcommand's. */
export function loadCliSpec(cli: CliName): CommandSpec {
  let spec = cache.get(cli);
  if (!spec) {
    spec = buildSpec(cli, (command) => helpOf(cli, command));
    cache.set(cli, spec);
  }
  return spec;
}
