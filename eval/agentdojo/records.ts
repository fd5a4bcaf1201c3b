import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { z } from 'zod';
import { SUITE_NAMES, type SuiteName, type ToolSpecJson } from '../../examples/agentdojo/suites.js';

/**
 * A message's content: a string (benchmark v1), or, from v1.2 on, a list of content blocks of which
 * the `text` ones are joined (others, such as a model's reasoning, are not what the agent read or said).
 */
const ContentSchema = z
  .union([z.string(), z.array(z.looseObject({ type: z.string(), content: z.string().nullable().optional() }))])
  .nullable()
  .optional()
  .transform((c): string | null => (c == null ? null : typeof c === 'string' ? c : c.filter((b) => b.type === 'text').map((b) => b.content ?? '').join('\n')));

/** A tool call as recorded: `{function, args, id}`; v1.2 adds `placeholder_args` (ignored). */
const ToolCallSchema = z.object({ function: z.string(), args: z.record(z.string(), z.unknown()).nullable().default({}), id: z.string().nullable().optional() });

/**
 * One recorded agent run in AgentDojo's format (see ../shared/agentdojo/README.md), v1 or v1.2
 * (`benchmark_version`, content blocks); fields this harness does not use are accepted and dropped.
 */
export const RunRecordSchema = z.object({
  suite_name: z.enum(SUITE_NAMES),
  benchmark_version: z.string().nullable().optional(),
  user_task_id: z.string(),
  injection_task_id: z.string().nullable(),
  attack_type: z.string().nullable(),
  injections: z.record(z.string(), z.string()).nullable().default({}).transform((i) => i ?? {}),
  messages: z.array(
    z.object({
      role: z.enum(['system', 'user', 'assistant', 'tool']),
      content: ContentSchema,
      tool_calls: z.array(ToolCallSchema).nullable().optional(),
      tool_call_id: z.string().nullable().optional(),
      error: z.string().nullable().optional(),
    }),
  ),
  utility: z.boolean(),
  security: z.boolean(),
});
export type RunRecord = z.infer<typeof RunRecordSchema>;

const TaskCallSchema = z.object({ function: z.string(), args: z.record(z.string(), z.unknown()) });
const SuiteTasksSchema = z.object({
  tools: z.array(z.object({ name: z.string(), description: z.string(), parameters: z.record(z.string(), z.unknown()) })),
  user_tasks: z.array(z.object({ id: z.string(), prompt: z.string(), ground_truth: z.array(TaskCallSchema) })),
  injection_tasks: z.array(z.object({ id: z.string(), goal: z.string(), ground_truth: z.array(TaskCallSchema) })),
});
export const TasksSchema = z.record(z.enum(SUITE_NAMES), SuiteTasksSchema);
export type Tasks = z.infer<typeof TasksSchema>;
export type InjectionTask = Tasks[SuiteName]['injection_tasks'][number];

export async function readTasks(file: string): Promise<Tasks> {
  const parsed = TasksSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
  if (!parsed.success) throw new Error(`${file}: not an AgentDojo task file: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

export const toolSpecs = (tasks: Tasks, suite: SuiteName): ToolSpecJson[] => tasks[suite]?.tools ?? [];

/** A record with where it was read from. */
export interface LoadedRecord {
  path: string;
  record: RunRecord;
  /** `none` for a run without attack. */
  attack: string;
  /** A user task's run without attack: the benign baseline (injection_task_N/none runs are not). */
  benign: boolean;
}

/** Every `*.json` run record under `dir`, in a stable order; a file that is not one is an error naming it. */
export async function readRecords(dir: string): Promise<LoadedRecord[]> {
  const files: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const entry of (await readdir(d, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.name.endsWith('.json')) files.push(path);
    }
  };
  await walk(dir);
  const records: LoadedRecord[] = [];
  for (const path of files) {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(path, 'utf8'));
    } catch (error) {
      throw new Error(`${relative(process.cwd(), path)}: not a run record: ${error instanceof Error ? error.message : String(error)}`);
    }
    const parsed = RunRecordSchema.safeParse(json);
    if (!parsed.success) throw new Error(`${relative(process.cwd(), path)}: not a run record: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
    const record = parsed.data;
    const attack = record.attack_type ?? 'none';
    records.push({ path, record, attack, benign: attack === 'none' && record.user_task_id.startsWith('user_task_') });
  }
  return records;
}
