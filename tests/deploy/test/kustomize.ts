/**
 * What can be checked of a kustomize tree without kustomize: every kustomization.yaml's
 * references exist, every manifest next to one is referenced by it, patches name resources
 * that exist, and JSON patches that add flags add valid ones.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import type { Invocation } from './checkInvocation.js';
import { cliOfResourceContainer, jsonPatchInvocations, parseYaml } from './extract.js';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A kubernetes object's kind/name. */
const idOf = (doc: unknown): string | undefined =>
  isObject(doc) && isObject(doc.metadata) && typeof doc.metadata.name === 'string'
    ? `${doc.kind}/${doc.metadata.name}`
    : undefined;

/** The file kustomize reads for a kustomization directory. */
function kustomizationFile(dir: string): string | undefined {
  for (const name of ['kustomization.yaml', 'kustomization.yml', 'Kustomization']) {
    if (existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** Result of checking a kustomization tree. */
export interface KustomizeCheck {
  problems: string[];
  /** Flags added by JSON patches, for checkInvocation. */
  invocations: Invocation[];
  /** Every resource object the tree's kustomizations include (before patches). */
  resources: Map<string, unknown>;
}

/**
 * Checks the kustomization in `dir` and, recursively, those it references. `root` is only for
 * messages (paths relative to it).
 */
export function checkKustomization(dir: string, root: string): KustomizeCheck {
  const problems: string[] = [];
  const invocations: Invocation[] = [];
  const resources = new Map<string, unknown>();
  const rel = (p: string) => relative(root, p) || '.';
  const visit = (d: string, seen: Set<string>): void => {
    const file = kustomizationFile(d);
    if (!file) {
      problems.push(`${rel(d)}: referenced as a kustomization, but has no kustomization.yaml.`);
      return;
    }
    if (seen.has(d)) {
      problems.push(`${rel(file)}: references itself through its resources.`);
      return;
    }
    seen.add(d);
    const { docs, problems: syntax } = parseYaml(readFileSync(file, 'utf8'), rel(file));
    problems.push(...syntax);
    const k = docs[0];
    if (!isObject(k)) {
      problems.push(`${rel(file)}: expected a Kustomization object.`);
      return;
    }
    const referenced = new Set<string>([file]);
    const need = (entry: unknown, what: string): string | undefined => {
      if (typeof entry !== 'string') {
        problems.push(`${rel(file)}: a ${what} entry is not a path: ${JSON.stringify(entry)}.`);
        return undefined;
      }
      if (/^[a-z]+:\/\//.test(entry)) {
        problems.push(
          `${rel(file)}: ${what} ${entry} is remote; deployment files must build offline.`,
        );
        return undefined;
      }
      const path = resolve(d, entry);
      if (!existsSync(path)) {
        problems.push(`${rel(file)}: ${what} ${entry} does not exist (looked for ${rel(path)}).`);
        return undefined;
      }
      referenced.add(path);
      return path;
    };
    for (const entry of (k.resources as unknown[] | undefined) ?? []) {
      const path = need(entry, 'resource');
      if (!path) continue;
      if (statSync(path).isDirectory()) {
        const sub = checkKustomization(path, root);
        problems.push(...sub.problems);
        invocations.push(...sub.invocations);
        for (const [id, doc] of sub.resources) resources.set(id, doc);
      } else {
        const parsed = parseYaml(readFileSync(path, 'utf8'), rel(path));
        problems.push(...parsed.problems);
        for (const doc of parsed.docs) {
          const id = idOf(doc);
          if (id) resources.set(id, doc);
        }
      }
    }
    for (const entry of (k.components as unknown[] | undefined) ?? []) need(entry, 'component');
    const patches = [
      ...((k.patches as unknown[] | undefined) ?? []),
      ...((k.patchesJson6902 as unknown[] | undefined) ?? []),
      ...((k.patchesStrategicMerge as unknown[] | undefined) ?? []).map((path) => ({ path })),
    ];
    for (const patch of patches) {
      if (!isObject(patch) || patch.path === undefined) continue;
      const path = need(patch.path, 'patch');
      if (!path) continue;
      const where = rel(path);
      const parsed = parseYaml(readFileSync(path, 'utf8'), where);
      problems.push(...parsed.problems);
      const target = isObject(patch.target) ? patch.target : undefined;
      if (target) {
        const id = `${target.kind}/${target.name}`;
        const resource = resources.get(id);
        if (!resource) {
          problems.push(
            `${rel(file)}: patch ${where} targets ${id}, which no resource of this kustomization defines.`,
          );
          continue;
        }
        const ops = parsed.docs[0];
        if (Array.isArray(ops)) {
          const found = jsonPatchInvocations(ops, where, (index) =>
            cliOfResourceContainer(resource, index),
          );
          problems.push(...found.problems);
          invocations.push(...found.invocations);
        }
      } else {
        // A strategic-merge patch names its target itself.
        for (const doc of parsed.docs) {
          const id = idOf(doc);
          if (id && !resources.has(id)) {
            problems.push(
              `${rel(file)}: patch ${where} is for ${id}, which no resource of this kustomization defines.`,
            );
          }
        }
      }
    }
    // A manifest beside a kustomization that it does not mention is one somebody forgot.
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (/\.ya?ml$/.test(name) && !referenced.has(path)) {
        problems.push(
          `${rel(path)}: not referenced by ${rel(file)} (add it to resources or patches, or move it out).`,
        );
      }
    }
  };
  visit(resolve(dir), new Set());
  return { problems, invocations, resources };
}

/** The directories under `root` that hold a kustomization. */
export function kustomizationDirs(root: string): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    if (kustomizationFile(d)) found.push(d);
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(join(d, entry.name));
    }
  };
  walk(root);
  return found.sort();
}

/** Whether `dir` (an overlay) includes `base`, directly or through other kustomizations. */
export function includes(dir: string, base: string): boolean {
  const file = kustomizationFile(dir);
  if (!file) return false;
  const k = parseYaml(readFileSync(file, 'utf8'), file).docs[0];
  if (!isObject(k)) return false;
  return ((k.resources as unknown[] | undefined) ?? []).some((entry) => {
    if (typeof entry !== 'string') return false;
    const path = resolve(dir, entry);
    return (
      path === resolve(base) ||
      (existsSync(path) && statSync(path).isDirectory() && includes(path, base))
    );
  });
}
