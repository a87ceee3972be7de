"""The LitServe peer: ``python -m bench.litserve_peer --port N`` serves POST /predict with
``{"image": "<base64 JPEG>"}`` through the same predictors, with LitServe's dynamic batching."""

from __future__ import annotations

import argparse
import base64

import litserve as ls

from bench.peers import load_task_predictors, run_task_batch


class TaskAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        import torch

        torch.set_num_threads(self.torch_threads)
        self.detector, self.classifier = load_task_predictors(
            device="cuda" if device.startswith("cuda") else "cpu"
        )

    def decode_request(self, request: dict) -> bytes:
        return base64.b64decode(request["image"])

    def batch(self, inputs: list[bytes]) -> list[bytes]:
        return inputs

    def predict(self, images: list[bytes]) -> list[dict]:
        return run_task_batch(self.detector, self.classifier, images)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-s", type=float, default=0.005)
    parser.add_argument("--torch-threads", type=int, default=2)
    args = parser.parse_args()
    api = TaskAPI(max_batch_size=args.max_batch_size, batch_timeout=args.batch_wait_s)
    api.torch_threads = args.torch_threads
    import torch

    accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    server = ls.LitServer(
        api, accelerator=accelerator, devices=1, workers_per_device=1, timeout=120
    )
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
