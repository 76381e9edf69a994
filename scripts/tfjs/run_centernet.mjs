// Runs the original TensorFlow.js CenterNet graph (models/centernet.json + .bin from @vladmandic/human)
// in the tfjs runtime's pure-JS CPU backend on raw float32 NHWC inputs; writes its `tower_0/detections`
// outputs as raw float32. Driven by scripts/check_tfjs.py, which compares them with onnxruntime's.
//   node run_centernet.mjs MODEL_JSON INPUTS_F32 COUNT OUTPUTS_F32
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { loadGraphModel } from '@tensorflow/tfjs-converter';

const [, , modelJson, inputsPath, countArg, outputsPath] = process.argv;
const model = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
const dir = path.dirname(modelJson);
const weightSpecs = [];
const shards = [];
for (const group of model.weightsManifest) {
  weightSpecs.push(...group.weights);
  for (const p of group.paths) shards.push(fs.readFileSync(path.join(dir, p)));
}
const all = Buffer.concat(shards);
const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
await tf.setBackend('cpu');
const graph = await loadGraphModel(tf.io.fromMemory({
  modelTopology: model.modelTopology, weightSpecs, weightData, format: model.format,
  generatedBy: model.generatedBy, convertedBy: model.convertedBy,
}));
const shape = graph.inputs[0].shape.map((d) => (d < 0 ? 1 : d));
const per = shape.reduce((a, b) => a * b, 1);
const count = Number(countArg);
const raw = fs.readFileSync(inputsPath);
const inputs = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
if (inputs.length !== per * count) throw new Error(`inputs: ${inputs.length} floats, expected ${count} x ${per}`);
const outs = [];
for (let i = 0; i < count; i++) {
  const x = tf.tensor(inputs.subarray(i * per, (i + 1) * per), shape);
  const y = graph.execute(x, 'tower_0/detections');
  outs.push(Buffer.from(new Float32Array(await y.data()).buffer));
  tf.dispose([x, y]);
}
fs.writeFileSync(outputsPath, Buffer.concat(outs));
console.error(`tfjs ${tf.version_core} (${tf.getBackend()}): ${count} inputs ${JSON.stringify(shape)}`);
