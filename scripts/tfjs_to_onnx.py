#!/usr/bin/env python3
"""Convert a TensorFlow.js graph model (model.json + .bin) to ONNX with numpy + onnx only.

Written for the MobileNetV3-CenterNet COCO detector shipped as models/centernet.{json,bin}
in the npm package @vladmandic/human (MIT).  Only the TF ops that graph uses are
implemented; anything else raises instead of converting silently wrong.  No TensorFlow,
tf2onnx or tfjs is needed, so the model can be rebuilt anywhere PyPI is reachable.

Layout: TF runs NHWC, ONNX convolutions want NCHW.  Activations produced by conv-like ops
are kept NCHW (tracked per tensor) and Transposes are inserted only where a layout-sensitive
op (Reshape, TopK, ...) needs the original NHWC view, i.e. once at the input and twice in
the CenterNet decoding tail.

    python scripts/tfjs_to_onnx.py centernet.json centernet-coco.onnx
    python scripts/tfjs_to_onnx.py --verify centernet-coco.onnx
"""
import argparse
import base64
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 7  # pinned (with OPSET) so the output bytes don't depend on the onnx version
# 0-based class order of the model output (= @vladmandic/human src/object/labels.ts,
# which is also the ultralytics/YOLO COCO-80 order).
COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush"]
NP_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
ONNX_DTYPES = {"DT_FLOAT": TensorProto.FLOAT, "DT_INT32": TensorProto.INT32,
               "DT_INT64": TensorProto.INT64, "DT_BOOL": TensorProto.BOOL}
NHWC2NCHW_AXIS = [0, 2, 3, 1]  # where NHWC axis i lives in the NCHW tensor


def load_weights(model, model_dir):
    """Decode every weightsManifest entry to a numpy array (fp16/uint8/uint16 -> float32).

    TFJS stores all Const values here, shard files concatenated in manifest order."""
    out = {}
    for group in model["weightsManifest"]:
        buf = b"".join((Path(model_dir) / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"], dtype=np.int64))
            q = w.get("quantization")
            dt = np.dtype(q["dtype"] if q else NP_DTYPES[w["dtype"]])
            raw = np.frombuffer(buf, dt, n, off)
            off += n * dt.itemsize
            if q and q["dtype"] in ("uint8", "uint16"):  # affine quantization
                raw = raw.astype(np.float32) * q["scale"] + q["min"]
            out[w["name"]] = raw.astype(NP_DTYPES[w["dtype"]]).reshape(w["shape"])
        if off != len(buf):
            raise ValueError(f"weights {group['paths']}: used {off} of {len(buf)} bytes")
    return out


def attr(node, key, default=None):
    """Plain Python value of a TF NodeDef attr as serialized by the TFJS converter."""
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        if "s" in lst:
            return [base64.b64decode(s).decode() for s in lst["s"]]
        return [int(i) for i in lst.get("i", [])]
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "type" in a:
        return a["type"]
    return a.get("b", a.get("f", default))


class Converter:
    def __init__(self, model, weights, input_name="input"):
        self.tf = {n["name"]: n for n in model["modelTopology"]["node"]}
        self.weights, self.input_name = weights, input_name
        self.nodes, self.inits = [], []
        self.out = {}        # TF tensor ref ("node" / "node:1") -> ONNX tensor name
        self.nchw = set()    # ONNX tensors kept channels-first
        self.cache = {}      # memoized transposes / initializers

    # ---- helpers ---------------------------------------------------------------
    def const(self, ref):
        """numpy value of a TF Const input, or None (used for weights, axes, shapes)."""
        node = self.tf[ref.split(":")[0]]
        return self.weights[node["name"]] if node["op"] == "Const" else None

    def init(self, name, arr):
        if name not in self.cache:
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
            self.cache[name] = name
        return name

    def emit(self, op, inputs, name, n_out=1, **attrs):
        outs = [name] + [f"{name}:{i}" for i in range(1, n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def value(self, ref):
        """ONNX name holding TF tensor `ref`; Consts become initializers on first use."""
        ref = ref.removesuffix(":0")
        if ref not in self.out:
            self.out[ref] = self.init(ref, self.const(ref))
        return self.out[ref]

    def transpose(self, name, perm, suffix):
        key = name + suffix
        if key not in self.cache:
            self.cache[key] = self.emit("Transpose", [name], key, perm=perm)
        return self.cache[key]

    def as_nchw(self, name):
        return name if name in self.nchw else self.transpose(name, [0, 3, 1, 2], "/nchw")

    def as_nhwc(self, name):
        return self.transpose(name, [0, 2, 3, 1], "/nhwc") if name in self.nchw else name

    # ---- ops -------------------------------------------------------------------
    def conv(self, n, ins, depthwise):
        """(Fused)Conv2D / (Fused)DepthwiseConv2dNative: HWIO weights -> OIHW, TF SAME
        padding == ONNX SAME_UPPER (extra pad row/col at the end)."""
        if attr(n, "data_format", "NHWC") != "NHWC" or attr(n, "padding") == "EXPLICIT":
            raise NotImplementedError(f"{n['name']}: data_format/padding")
        w = self.const(ins[1])
        kh, kw, cin, cout = w.shape
        if depthwise:  # [kh, kw, cin, mult] -> [cin*mult, 1, kh, kw], one group per channel
            w, group = w.reshape(kh, kw, 1, cin * cout).transpose(3, 2, 0, 1), cin
        else:
            w, group = w.transpose(3, 2, 0, 1), 1
        args = [self.as_nchw(self.value(ins[0])), self.init(n["name"] + "/W", w)]
        fused = attr(n, "fused_ops", [])
        if fused:
            if fused[0] != "BiasAdd" or attr(n, "num_args") != 1:
                raise NotImplementedError(f"{n['name']}: fused {fused}")
            args.append(self.value(ins[2]))
        s, d = attr(n, "strides"), attr(n, "dilations", [1, 1, 1, 1])
        y = self.emit("Conv", args, n["name"] if len(fused) < 2 else n["name"] + "/conv",
                      kernel_shape=[kh, kw], strides=s[1:3], dilations=d[1:3], group=group,
                      auto_pad="SAME_UPPER" if attr(n, "padding") == "SAME" else "VALID")
        for act in fused[1:]:
            if act not in ("Relu", "Relu6") or act != fused[-1]:
                raise NotImplementedError(f"{n['name']}: fused {fused}")
            y = self.activation(act, y, n["name"])
        return y, True

    def activation(self, op, x, name):
        if op == "Relu6":  # Clip(0, 6); the hard-swish pieces arrive as Add/Relu6/Mul
            lo, hi = self.init("relu6/min", np.float32(0)), self.init("relu6/max", np.float32(6))
            return self.emit("Clip", [x, lo, hi], name)
        return self.emit(op, [x], name)

    def elementwise(self, n, ins, op):
        """Binary op with broadcasting; if either side is NCHW, the other one is moved too
        (a non-scalar Const is re-laid out at conversion time)."""
        names = []
        layout = any(self.const(r) is None and self.value(r) in self.nchw for r in ins)
        for r in ins:
            c = self.const(r)
            if not layout or (c is not None and c.ndim == 0):
                names.append(self.value(r))
            elif c is not None:
                c4 = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(0, 3, 1, 2)
                names.append(self.init(r + "/nchw", c4))
            else:
                names.append(self.as_nchw(self.value(r)))
        if op == "FloorDiv":  # indices here are >= 0, so int Div (truncating) == floor
            if attr(n, "T") == "DT_INT32":
                return self.emit("Div", names, n["name"]), layout
            return self.emit("Floor", [self.emit("Div", names, n["name"] + "/div")], n["name"]), layout
        if op == "FloorMod":  # ONNX Mod(fmod=0) on ints has Python/TF floor semantics
            if attr(n, "T") != "DT_INT32":
                raise NotImplementedError(f"{n['name']}: float FloorMod")
            return self.emit("Mod", names, n["name"], fmod=0), layout
        return self.emit(op, names, n["name"]), layout

    def convert_node(self, n):
        op, name = n["op"], n["name"]
        ins = [i for i in n.get("input", []) if not i.startswith("^")]
        x = self.value(ins[0]) if ins else None
        keep = x in self.nchw  # layout-transparent ops keep their input's layout
        if op == "Placeholder":
            return self.input_name, False
        if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
            return self.conv(n, ins, depthwise="Depthwise" in op)
        if op in ("Add", "AddV2", "Sub", "Mul", "Equal", "FloorDiv", "FloorMod"):
            return self.elementwise(n, ins, {"AddV2": "Add"}.get(op, op))
        if op in ("Relu", "Relu6", "Sigmoid", "Identity"):
            return self.activation(op, x, name), keep
        if op == "Cast":
            return self.emit("Cast", [x], name, to=ONNX_DTYPES[attr(n, "DstT")]), keep
        if op == "MaxPool":
            k, s = attr(n, "ksize"), attr(n, "strides")
            return self.emit("MaxPool", [self.as_nchw(x)], name, kernel_shape=k[1:3], strides=s[1:3],
                             auto_pad="SAME_UPPER" if attr(n, "padding") == "SAME" else "VALID"), True
        if op == "Mean":
            axes = [int(a) % 4 for a in np.atleast_1d(self.const(ins[1]))]
            if keep and attr(n, "keep_dims"):
                return self.emit("ReduceMean", [x], name, axes=[NHWC2NCHW_AXIS[a] for a in axes],
                                 keepdims=1), True
            return self.emit("ReduceMean", [self.as_nhwc(x)], name, axes=axes,
                             keepdims=int(bool(attr(n, "keep_dims")))), False
        if op == "ResizeBilinear":  # TF1 default (no align_corners/half_pixel) == asymmetric
            mode = ("align_corners" if attr(n, "align_corners") else
                    "half_pixel" if attr(n, "half_pixel_centers") else "asymmetric")
            x = self.as_nchw(x)
            nc = self.emit("Slice", [self.emit("Shape", [x], name + "/shape"),
                                     self.init("i64/0", np.array([0], np.int64)),
                                     self.init("i64/2", np.array([2], np.int64))], name + "/nc")
            hw = self.init(name + "/hw", self.const(ins[1]).astype(np.int64))
            sizes = self.emit("Concat", [nc, hw], name + "/sizes", axis=0)
            return self.emit("Resize", [x, "", "", sizes], name, mode="linear",
                             coordinate_transformation_mode=mode), True
        if op == "ConcatV2":
            axis = int(self.const(ins[-1]))
            vals = [self.value(r) for r in ins[:-1]]
            if any(v in self.nchw for v in vals):
                return self.emit("Concat", [self.as_nchw(v) for v in vals], name,
                                 axis=NHWC2NCHW_AXIS[axis % 4]), True
            return self.emit("Concat", vals, name, axis=axis), False
        # everything below is layout-sensitive: it sees the tensor exactly as TF does (NHWC)
        x = self.as_nhwc(x)
        if op == "Reshape":
            shape = self.init(name + "/shape", self.const(ins[1]).astype(np.int64))
            return self.emit("Reshape", [x, shape], name), False
        if op == "ExpandDims":
            axes = self.init(name + "/axes", np.atleast_1d(self.const(ins[1])).astype(np.int64))
            return self.emit("Unsqueeze", [x, axes], name), False
        if op == "TopKV2":  # ONNX indices are int64, TF's int32: cast back so int math matches
            k = self.init(name + "/k", np.atleast_1d(self.const(ins[1])).astype(np.int64))
            vals, idx = self.emit("TopK", [x, k], name, n_out=2, axis=-1, largest=1, sorted=1)
            self.out[name + ":1"] = self.emit("Cast", [idx], name + "/indices", to=TensorProto.INT32)
            return vals, False
        if op == "GatherV2":
            if attr(n, "batch_dims", 0) != 0:
                raise NotImplementedError(f"{name}: batch_dims")
            return self.emit("Gather", [x, self.value(ins[1])], name,
                             axis=int(self.const(ins[2]))), False
        if op == "StridedSlice":
            return self.strided_slice(n, x, *(self.const(r) for r in ins[1:4])), False
        raise NotImplementedError(f"TF op {op} ({name}) is not supported")

    def strided_slice(self, n, x, begin, end, strides):
        """StridedSlice -> Slice; begin/end masks become open ranges.  ellipsis, new-axis
        and shrink-axis masks are not used by this graph and rejected."""
        if any(attr(n, m, 0) for m in ("ellipsis_mask", "new_axis_mask", "shrink_axis_mask")):
            raise NotImplementedError(f"{n['name']}: StridedSlice mask")
        big = np.iinfo(np.int64).max
        starts, ends = [], []
        for i, (b, e, s) in enumerate(zip(begin, end, strides, strict=True)):
            starts.append((0 if s > 0 else big) if attr(n, "begin_mask", 0) >> i & 1 else int(b))
            ends.append((big if s > 0 else -big) if attr(n, "end_mask", 0) >> i & 1 else int(e))
        vals = [starts, ends, list(range(len(begin))), [int(s) for s in strides]]
        names = [self.init(f"{n['name']}/{k}", np.array(v, np.int64))
                 for k, v in zip(("starts", "ends", "axes", "steps"), vals, strict=True)]
        return self.emit("Slice", [x] + names, n["name"])

    def convert(self, output_ref, output_name="detections"):
        """Convert the subgraph feeding `output_ref` in topological order (iterative DFS)."""
        order, state, stack = [], {}, [output_ref.split(":")[0]]
        while stack:
            name = stack.pop()
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                state[name] = 2
                order.append(name)
                continue
            state[name] = 1
            stack.append(name)
            deps = [i.lstrip("^").split(":")[0] for i in self.tf[name].get("input", [])]
            stack += [d for d in deps if state.get(d) is None]
        for name in order:
            n = self.tf[name]
            if n["op"] != "Const":
                self.out[name], is_nchw = self.convert_node(n)
                if is_nchw:
                    self.nchw.add(self.out[name])
        self.emit("Identity", [self.as_nhwc(self.value(output_ref))], output_name)
        return output_name


def dynamic_batch(m, batch_gather="tower_0/BatchGather"):
    """Make the batch axis dynamic (issue 21.4): the graph TF wrote for one image flattens the batch
    away in its decode tail (Reshape to [1, -1] before TopK, a flat Gather of the box sizes at
    [16384, 4]). Those reshapes keep dim 0 instead (shape value 0) and the flat Gather becomes a
    GatherND with batch_dims=1, so image b's top-100 indices pick image b's sizes. Batch 1 computes
    exactly what it did before (scripts/check_tfjs.py still compares it with the tfjs runtime)."""
    inits = {i.name: i for i in m.graph.initializer}

    def set_shape(node_name, shape):
        node = next(n for n in m.graph.node if n.name == node_name)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.asarray(shape, np.int64), node.input[1]))

    set_shape("tower_0/Reshape", [0, -1])                        # scores of each image, one row each
    set_shape(f"{batch_gather}/Reshape_1", [0, -1, 1])           # [B, 100] cell indices -> [B, 100, 1]
    set_shape(f"{batch_gather}/Reshape_2", [0, -1, 4])           # sizes: [B, H*W, 4]
    set_shape(f"{batch_gather}/Reshape_3", [0, -1, 4])           # [B, 100, 4]
    nodes = list(m.graph.node)
    i, gather = next((i, n) for i, n in enumerate(nodes) if n.name == f"{batch_gather}/GatherV2")
    cast = helper.make_node("Cast", [gather.input[1]], [gather.input[1] + "/i64"], name=gather.name + "/i64",
                            to=TensorProto.INT64)
    nd = helper.make_node("GatherND", [gather.input[0], cast.output[0]], list(gather.output), name=gather.name,
                          batch_dims=1)
    del m.graph.node[:]
    m.graph.node.extend(nodes[:i] + [cast, nd] + nodes[i + 1:])
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return m


def topological(nodes, known):
    """Nodes ordered so each comes after the nodes its inputs come from, otherwise in their given
    order (Kahn's algorithm, earliest first); `known` are the graph inputs and initializers."""
    import heapq

    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    needs = [{producer[i] for i in n.input if i in producer} for n in nodes]
    undefined = [i for n in nodes for i in n.input if i and i not in producer and i not in known]
    if undefined:
        raise ValueError(f"graph input {undefined[0]!r} is defined nowhere")
    users = [[] for _ in nodes]
    for k, deps in enumerate(needs):
        for d in deps:
            users[d].append(k)
    ready = [k for k, deps in enumerate(needs) if not deps]
    heapq.heapify(ready)
    left = [len(deps) for deps in needs]
    out = []
    while ready:
        k = heapq.heappop(ready)
        out.append(nodes[k])
        for u in users[k]:
            left[u] -= 1
            if not left[u]:
                heapq.heappush(ready, u)
    if len(out) != len(nodes):
        raise ValueError("graph has a cycle")
    return out


def dynamic_size(m, grid_width="tower_0/strided_slice_6", heatmap="tower_0/keypoints"):
    """Make height and width dynamic (issue 21): the graph is fully convolutional except the three
    upsample target sizes of the head and the heatmap's grid width in the decode tail, which TF froze
    for 512x512. Each upsample now takes the size of the tensor it is concatenated with (the next
    finer level, NCHW), and the grid width that turns a flat index into x, y is the heatmap's own
    width. Any input whose sides are multiples of 32 then works; at 512x512 every value is the same
    as before, so scripts/check_tfjs.py still compares it with the tfjs runtime."""
    graph = m.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    added = []

    def const(name, arr):
        if name not in inits:
            inits[name] = numpy_helper.from_array(np.asarray(arr, np.int64), name)
            graph.initializer.append(inits[name])
        return name

    def node(op, inputs, name, **attrs):
        added.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    resized = 0
    for n in graph.node:
        if n.op_type != "Resize":
            continue
        concat = next(c for c in consumers[n.output[0]] if c.op_type == "Concat")
        partner = next(i for i in concat.input if i != n.output[0])
        sizes = next(s for s in graph.node if s.output[0] == n.input[3])     # Concat(nc, hw)
        hw = node("Slice", [node("Shape", [partner], n.name + "/like/shape"), const("i64/2", [2]),
                            const("i64/4", [4])], n.name + "/like")        # the partner's H, W
        sizes.input[1] = hw
        resized += 1
    if resized != 3:
        raise ValueError(f"expected 3 upsamples in the CenterNet head, found {resized}")
    width = node("Cast", [node("Gather", [node("Shape", [heatmap], grid_width + "/shape"), const("i64/3", [3])],
                               grid_width + "/w", axis=0)], grid_width + "/dynamic", to=TensorProto.INT32)
    for n in graph.node:
        n.input[:] = [width if i == grid_width else i for i in n.input]
    stale = {grid_width} | {f"{r.name}/hw" for r in graph.node if r.op_type == "Resize"}
    kept = [i for i in graph.initializer if i.name not in stale]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = topological(list(graph.node) + added, {i.name for i in graph.input} | set(inits))
    del graph.node[:]
    graph.node.extend(nodes)
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param, dims[2].dim_param = "height", "width"
    return m


def convert(json_path, onnx_path, output_ref="tower_0/detections", dynamic_hw=True):
    """Write the ONNX model; dynamic_hw=False keeps TF's fixed height and width (the model before
    issue 21's input-size lever, for comparing with it)."""
    model = json.loads(Path(json_path).read_text())
    weights = load_weights(model, os.path.dirname(os.path.abspath(json_path)))
    placeholders = [n for n in model["modelTopology"]["node"] if n["op"] == "Placeholder"]
    dims = [int(d["size"]) for d in placeholders[0]["attr"]["shape"]["shape"]["dim"]]
    conv = Converter(model, weights)
    conv.convert(output_ref)
    graph = helper.make_graph(
        conv.nodes, "tfjs_" + os.path.splitext(os.path.basename(json_path))[0],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, None)], conv.inits)
    m = helper.make_model(graph, producer_name="hazardctl-tfjs_to_onnx",
                          opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = IR_VERSION
    dynamic_batch(m)
    if dynamic_hw:
        dynamic_size(m)
    # output shape (batch x 100 x 6) from ONNX shape inference, so consumers see it
    inferred = onnx.shape_inference.infer_shapes(m).graph.output[0]
    m.graph.output[0].CopyFrom(inferred)
    out_dims = m.graph.output[0].type.tensor_type.shape.dim
    out_dims[0].dim_param = "batch"
    top_k = next(numpy_helper.to_array(i) for i in m.graph.initializer if i.name == "tower_0/TopKV2/k")
    out_dims[1].dim_value = int(top_k[0])  # inference loses it once H, W are dynamic: the decode's top-k rows
    m.doc_string = ("MobileNetV3-CenterNet COCO detector converted from TFJS "
                    "@vladmandic/human@3.3.6 models/centernet.json (MIT)")
    meta = {"names": json.dumps({str(i): c for i, c in enumerate(COCO80)}), "imgsz": str(dims[1]),
            "layout": "centernet", "stride": "32",
            "output": "detections[batch,100,6]=x1,y1,x2,y2 (input pixels),score,class (0-based COCO-80)",
            "input": (f"input[batch,height,width,{dims[3]}] NHWC RGB float32 0..255, height and width multiples of "
                      f"32 (trained at {dims[1]}x{dims[2]})" if dynamic_hw else
                      f"input{['batch'] + dims[1:]} NHWC RGB float32 0..255")}
    helper.set_model_props(m, meta)
    onnx.checker.check_model(m)
    onnx.save(m, onnx_path)
    return m


def verify(onnx_path):
    """Cheap structural check used by fetch_models.sh (no onnxruntime needed)."""
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)
    io = [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
          for v in list(m.graph.input) + list(m.graph.output)]
    meta = {p.key: p.value for p in m.metadata_props}
    ok = (io == [("input", ["batch", "height", "width", 3]), ("detections", ["batch", 100, 6])]
          and len(json.loads(meta.get("names", "{}"))) == 80 and meta.get("layout") == "centernet")
    print(f"{onnx_path}: {'ok' if ok else 'BAD'} {io} nodes={len(m.graph.node)}")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_json", help="TFJS model.json (or the .onnx with --verify)")
    p.add_argument("output", nargs="?", help="output .onnx path")
    p.add_argument("--output-node", default="tower_0/detections")
    p.add_argument("--verify", action="store_true", help="only check an existing .onnx")
    a = p.parse_args()
    if a.verify:
        return 0 if verify(a.model_json) else 1
    if not a.output:
        p.error("output path required")
    m = convert(a.model_json, a.output, a.output_node)
    print(f"wrote {a.output}: {len(m.graph.node)} nodes, {len(m.graph.initializer)} initializers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
