/** Outrun's server API: build an instance, give it your own tools or models, start it. */
export { createOutrun, type CreateOutrunOptions, type Outrun, type OutrunContext } from './app.ts';
export { loadConfig, type Config } from './config.ts';
export { ToolRegistry, createDefaultToolRegistry } from './agent/tools.ts';
export { resolveModel, availableModels } from './agent/providers.ts';
export { createScriptedModel, parseScript } from './agent/scripted-model.ts';
export { RunStatus, RunErrorCode, RunTrigger } from './runs/run-status.ts';
export type { RunObject, RunUsage } from './runs/run-object.ts';
export { OutrunError } from './errors.ts';
