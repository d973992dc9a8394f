/**
 * @shardline/models: the model registry (`seed-cnn`, `mlp`, `fast-cnn`, and yours), Keras-style
 * summaries, and save/load in the TensorFlow.js layers format (model.json + weights.bin).
 *
 * @example
 * ```ts
 * import { createModel, formatSummary, loadModel, saveModel } from '@shardline/models';
 *
 * const model = createModel('seed-cnn', { seed: 7 });
 * console.log(formatSummary(model));
 * await saveModel(model, './out/seed-cnn');
 * const again = await loadModel('./out/seed-cnn');
 * ```
 */
export {
  createBuildContext,
  deriveSeed,
  type Initializer,
  type ModelBuildContext,
  type SeededInitializerKind,
} from './buildContext.js';
export { type FastCnnHyperparameters, fastCnnSpec } from './fastCnn.js';
export {
  describeHyperparameter,
  type HyperparameterInput,
  type HyperparameterSpec,
  type HyperparameterSpecs,
  type Hyperparameters,
  type HyperparameterValue,
  type IntegerListHyperparameter,
  type NumberHyperparameter,
  parseHyperparameterInputs,
  resolveHyperparameters,
  withDataShape,
} from './hyperparameters.js';
export {
  createFileLoadHandler,
  createFileSaveHandler,
  type FileLoadHandlerOptions,
  type FileSaveHandlerOptions,
  LAYERS_MODEL_FORMAT,
  type LoadModelOptions,
  loadModel,
  MODEL_JSON_FILE,
  type ModelJson,
  type SavedModelInfo,
  type SaveModelOptions,
  saveModel,
  WEIGHTS_FILE,
  type WeightsManifestGroup,
} from './io.js';
export { type MlpHyperparameters, mlpSpec } from './mlp.js';
export {
  checkModelFitsData,
  type DataShape,
  isModelFilePath,
  type LoadedModelFile,
  type LoadedPlugin,
  type LoadModelFileOptions,
  loadModelFile,
  loadPlugin,
  type ModelSpecModuleExport,
} from './modelFiles.js';
export {
  type AnyModelOptions,
  type BuiltinModels,
  builtinModelNames,
  type CreateModelOptions,
  createModel,
  createModelRegistry,
  defaultRegistry,
  getModelProvenance,
  getModelSpec,
  listModels,
  type ModelBuildOptions,
  type ModelProvenance,
  type ModelRegistry,
  type ModelSpec,
  type RegisterModelOptions,
  registerModel,
  unregisterModel,
} from './registry.js';
export { type SeedCnnHyperparameters, seedCnnSpec } from './seedCnn.js';
export {
  formatShape,
  formatSummary,
  type LayerSummary,
  type ModelSummary,
  type OutputShape,
  summary,
} from './summary.js';
