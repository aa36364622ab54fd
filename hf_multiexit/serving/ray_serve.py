"""Ray Serve deployment of the same server: each replica loads the model and runs its own scheduler behind the
FastAPI app of `server.create_app`, and Ray routes requests between replicas and scales them (`num_replicas`, or an
`autoscaling_config` given to `build_application`). Optional extra: `pip install hf-multiexit[ray]`.

    hf-multiexit serve --model DIR --ray [--num_replicas 2] [--host 127.0.0.1 --port 8000]

or, on a running cluster, with Ray's own CLI and config files (an application builder taking the `serve` options):

    serve run hf_multiexit.serving.ray_serve:app_builder model=DIR mode=continuous
"""

from __future__ import annotations

from typing import Any

from .server import ServeArguments, create_app, load_scheduler

DEPLOYMENT_NAME = "hf-multiexit"


def _replica_app(args: ServeArguments):
    """Runs on each replica when it starts: the model, its scheduler and the app."""
    return create_app(load_scheduler(args))


def build_application(args: ServeArguments, **deployment_options: Any):
    """The Ray Serve application (`serve.run(build_application(args))`); `deployment_options` go to
    `serve.deployment` (for example `autoscaling_config`, `ray_actor_options`)."""
    from ray import serve

    options = {"num_replicas": args.num_replicas, **deployment_options}
    if "autoscaling_config" in options:
        options.pop("num_replicas")
    def build():
        # An ingress builder runs on the replica, so the model is loaded there rather than pickled from this process.
        # (A function, not a `functools.partial`: Ray tells builders from ASGI apps with `inspect.isfunction`.)
        return _replica_app(args)

    ingress = serve.ingress(build)
    return serve.deployment(ingress(type("MultiExitServer", (), {})), name=DEPLOYMENT_NAME, **options).bind()


def app_builder(arguments: dict[str, str]):
    """`serve run hf_multiexit.serving.ray_serve:app_builder model=DIR [mode=static ...]`: the `serve` options as
    `key=value` strings."""
    fields = ServeArguments.__dataclass_fields__
    unknown = sorted(set(arguments) - set(fields))
    if unknown:
        raise ValueError(f"unknown arguments {unknown}; valid ones are {sorted(fields)}.")
    from transformers import HfArgumentParser

    argv = [item for key, value in arguments.items() for item in (f"--{key}", str(value))]
    (args,) = HfArgumentParser(ServeArguments).parse_args_into_dataclasses(args=argv)
    return build_application(args)


def serve_with_ray(args: ServeArguments) -> None:
    """`hf-multiexit serve --ray`: joins the Ray cluster of `RAY_ADDRESS` (a local one when there is none), starts
    Serve's HTTP proxy on `--host`/`--port` and runs the application until interrupted."""
    import ray
    from ray import serve

    ray.init(ignore_reinit_error=True)
    serve.start(http_options={"host": args.host, "port": args.port})
    print(f"hf-multiexit: serving {args.model} with Ray Serve ({args.num_replicas} replicas) on "
          f"http://{args.host}:{args.port}")
    serve.run(build_application(args), name=DEPLOYMENT_NAME, route_prefix="/", blocking=True)
