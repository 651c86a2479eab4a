#!/usr/bin/env python3
"""A state dict of the recipe's CNN with PyTorch's names and layouts, written by the official
safetensors library (`safetensors.numpy.save_file`, the same file `safetensors.torch.save_file`
writes), and the network's forward pass in numpy with PyTorch's semantics: cross-correlation
with zero padding 1, ReLU, 2x2 max-pool, channel-major flatten (`view(n, -1)`), linear layers
`x @ W.T + b`. It lets the project check `trainer import` without installing torch.

usage: numpy_reference.py DATA_DIR OUT.safetensors RESULT.json [--images N] [--seed S]
RESULT.json: {"predictions": [...], "logits": [[...], ...]} for the first N test images.
"""
import argparse, json, os
import numpy as np
from idx import read_idx
from safetensors.numpy import save_file

LAYERS = [("conv1", (32, 1, 3, 3)), ("conv2", (64, 32, 3, 3)), ("fc1", (128, 3136)), ("fc2", (10, 128))]

def init(seed):
    """PyTorch's default initialisation: uniform in +-1/sqrt(fan_in), weights and biases."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in LAYERS:
        bound = 1.0 / np.sqrt(np.prod(shape[1:]))
        params[name + ".weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        params[name + ".bias"] = rng.uniform(-bound, bound, shape[0]).astype(np.float32)
    return params

def conv_relu_pool(x, w, b):
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for ky in range(3):
        for kx in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, ky:ky + h, kx:kx + wd], w[:, :, ky, kx])
    out = np.maximum(out + b[None, :, None, None], 0.0)
    return out.reshape(n, out.shape[1], h // 2, 2, wd // 2, 2).max(axis=(3, 5))

def forward(p, x):
    p = {k: v.astype(np.float64) for k, v in p.items()}
    x = conv_relu_pool(x, p["conv1.weight"], p["conv1.bias"])
    x = conv_relu_pool(x, p["conv2.weight"], p["conv2.bias"])
    x = x.reshape(x.shape[0], -1)
    x = np.maximum(x @ p["fc1.weight"].T + p["fc1.bias"], 0.0)
    return x @ p["fc2.weight"].T + p["fc2.bias"]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("result")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    params = init(a.seed)
    save_file(params, a.out)
    x = read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte"))[:a.images]
    x = (x.astype(np.float32) / 255.0).astype(np.float64)[:, None, :, :]
    logits = forward(params, x)
    with open(a.result, "w") as f:
        json.dump({"predictions": logits.argmax(1).tolist(), "logits": logits.tolist()}, f)

if __name__ == "__main__":
    main()
