"""Every prompt memtrain sends to a model, in one place.

Prompts are data: a versioned set of templates. Training and evaluation use the same version unless a run
says otherwise, and the version is recorded in every trace and results file so numbers stay comparable.
Each step of the memory agent is an independent single-user-turn conversation (DESIGN §1).
"""

from __future__ import annotations

from dataclasses import dataclass

from memtrain.errors import MemtrainError

NO_MEMORY = "No previous memory"
MASK = "[MASK]"
TARGET = "[TARGET]"
E2E_PROBLEM = f"Based on the entire article, which entity is represented by the {MASK} placeholder?"


@dataclass(frozen=True)
class PromptSet:
    version: str
    update: str  # fields: problem, memory, chunk
    final: str  # fields: problem, memory
    imr: str  # fields: memory, chunk
    full_context: str  # fields: problem, document (baseline: the whole document in one prompt)


V1 = PromptSet(
    version="v1",
    update=(
        "You are given a problem, the memory you have written so far, and the next section of an article. "
        "Read the section and rewrite your memory so that it keeps every detail that may help to solve "
        "the problem, from the old memory and from the new section. Your whole reply becomes the new "
        "memory, which is all you will keep.\n\n"
        "<problem>\n{problem}\n</problem>\n\n"
        "<memory>\n{memory}\n</memory>\n\n"
        "<section>\n{chunk}\n</section>\n\n"
        "Updated memory:"
    ),
    final=(
        "You are given a problem and the memory you wrote while reading an article. Solve the problem "
        "using the memory, and put your final answer in \\boxed{{}}.\n\n"
        "<problem>\n{problem}\n</problem>\n\n"
        "<memory>\n{memory}\n</memory>\n\n"
        "Your answer:"
    ),
    imr=(
        "You are given the memory you wrote while reading an article, and an earlier section of that "
        f"article in which one entity is replaced by {TARGET}. Which entity does {TARGET} stand for? "
        "Use your memory, and put your final answer in \\boxed{{}}.\n\n"
        "<memory>\n{memory}\n</memory>\n\n"
        "<section>\n{chunk}\n</section>\n\n"
        "Your answer:"
    ),
    full_context=(
        "You are given a problem and an article. Read the article, solve the problem, and put your final "
        "answer in \\boxed{{}}.\n\n"
        "<problem>\n{problem}\n</problem>\n\n"
        "<article>\n{document}\n</article>\n\n"
        "Your answer:"
    ),
)

# Beyond the paper, for micro-scale runs of the embedded 135M model (DESIGN §8): short plain instructions
# it can follow, no \boxed{} (use with answer_mode=lenient). Same fields and the same loop as v1. The IMR
# wording was chosen among five on 32 probes of 24-token chunks with the chunk itself as memory (the
# measurement is in experiments/results/learning_micro.md).
MICRO = PromptSet(
    version="micro",
    update=(
        "Question: {problem}\n\n"
        "Notes so far: {memory}\n\n"
        "New text: {chunk}\n\n"
        "Rewrite the notes: keep the names, places, numbers and facts from the notes and the new text.\n"
        "Notes:"
    ),
    final="Notes: {memory}\n\nQuestion: {problem} Answer with just the name.",
    imr=(
        "{memory}\n\n"
        f"In the sentence below, {TARGET} hides a name from the text above.\n"
        "{chunk}\n\n"
        f"What is {TARGET}? Answer with just the name."
    ),
    full_context="Text: {document}\n\nQuestion: {problem} Answer with just the name.",
)

# The paper's prompts. The memory update and the final answer are MemAgent's templates verbatim
# (BytedTsinghua-SIA/MemAgent, recurrent/impls/memory.py: TEMPLATE and TEMPLATE_FINAL_BOXED, including the
# space after "<problem>" and the closing newline), which the paper's memory agent uses. The IMR prompt is
# the paper's own (its Appendix A, quoted in DESIGN §2; "boxed{}" written as the final prompt's \boxed{}).
# The full-context baseline follows the final prompt's form with the article in place of the memory.
PAPER = PromptSet(
    version="paper",
    update=(
        "You are presented with a problem, a section of an article that may contain the answer to the "
        "problem, and a previous memory. Please read the provided section carefully and update the memory "
        "with the new information that helps to answer the problem. Be sure to retain all relevant details "
        "from the previous memory while adding any new, useful information.\n\n"
        "<problem> \n{problem}\n</problem>\n\n"
        "<memory>\n{memory}\n</memory>\n\n"
        "<section>\n{chunk}\n</section>\n\n"
        "Updated memory:\n"
    ),
    final=(
        "You are presented with a problem and a previous memory. Please answer the problem based on the "
        "previous memory and put the answer in \\boxed{{}}.\n\n"
        "<problem> \n{problem}\n</problem>\n\n"
        "<memory>\n{memory}\n</memory>\n\n"
        "Your answer:\n"
    ),
    imr=(  # the paper's Appendix A wording (DESIGN §2): no problem block
        "You are presented with a memory from previously read sections, and a section containing "
        f"placeholder {TARGET}. Based on the memory, please predict the entity marked by {TARGET} and put "
        "the answer in \\boxed{{}}.\n\n"
        "<memory>\n{memory}\n</memory>\n\n"
        "<section>\n{chunk}\n</section>\n"
    ),
    full_context=(
        "You are presented with a problem and an article. Please answer the problem based on the article and "
        "put the answer in \\boxed{{}}.\n\n"
        "<problem> \n{problem}\n</problem>\n\n"
        "<article>\n{document}\n</article>\n\n"
        "Your answer:\n"
    ),
)

PROMPT_SETS: dict[str, PromptSet] = {p.version: p for p in (V1, MICRO, PAPER)}


def get_prompts(version: str = "v1") -> PromptSet:
    try:
        return PROMPT_SETS[version]
    except KeyError:
        raise MemtrainError(f"unknown prompt version {version!r}; known: {sorted(PROMPT_SETS)}") from None


def user(content: str) -> list[dict[str, str]]:
    """A single-user-turn conversation, the only shape the memory agent sends."""
    return [{"role": "user", "content": content}]


def update_messages(problem: str, memory: str, chunk: str, version: str = "v1") -> list[dict[str, str]]:
    return user(get_prompts(version).update.format(problem=problem, memory=memory, chunk=chunk))


def final_messages(problem: str, memory: str, version: str = "v1") -> list[dict[str, str]]:
    return user(get_prompts(version).final.format(problem=problem, memory=memory))


def imr_messages(memory: str, masked_chunk: str, version: str = "v1") -> list[dict[str, str]]:
    return user(get_prompts(version).imr.format(memory=memory, chunk=masked_chunk))


def full_context_messages(problem: str, document: str, version: str = "v1") -> list[dict[str, str]]:
    return user(get_prompts(version).full_context.format(problem=problem, document=document))


# ------------------------------------------------------------------------------------------ search QA
# The searching memory agent (MEM1 setting, DESIGN §10; the loop is memtrain.agent.search). Turn 1 sees the
# instruction with the question(s); every later turn is the instruction, the agent's previous response as
# it was kept (``<think>memory</think>`` + the action) and the latest ``<information>`` block, nothing
# older: the ``<think>`` block is the memory.


@dataclass(frozen=True)
class SearchPromptSet:
    version: str
    instruction: str  # field: questions (the objectives joined by "; ")
    invalid: str  # the information text after a malformed action when search.on_invalid=retry
    source: str  # where the wording comes from
    demo: tuple[tuple[str, str], ...] = ()  # (role, content) messages put before every turn's conversation


# MEM1's instruction (MIT-MI/MEM1, the multi-objective data scripts' make_prefix), restated in our words with
# the same structure, tags and rules: a cumulative summary inside <think>, then either one keyword query
# inside <search> or every answer, in order and separated by semicolons, inside <answer>.
SEARCH_MEM1 = SearchPromptSet(
    version="mem1",
    instruction=(
        "You will answer one or more questions by reasoning step by step, keeping a summary, and searching "
        "the web.\n\n"
        "At every step you see the questions, your summary so far, your last search query and what it "
        "returned (at the first step you only see the questions). At each step:\n\n"
        "1. Reason, then write an updated, concise, cumulative summary inside <think> ... </think>. It is "
        "your only memory: keep in it everything important from the earlier <think> and <information> "
        "blocks, including answers already found.\n\n"
        "2. Then do exactly one of:\n"
        "   - If a question is still unanswered, write one search query for one question inside "
        "<search> ... </search>: a few keywords or a short phrase, one question at a time.\n"
        "   - If every question is answered, write the final answers in the order of the questions, "
        "separated by semicolons, inside <answer> answer1; answer2; ... </answer>. Keep each answer short: "
        "only the essential words, no explanation.\n\n"
        "Important:\n"
        "- After the questions or an <information> block, always reply in the form "
        "<think> ... </think><search> ... </search> or <think> ... </think><answer> ... </answer>.\n"
        "- Never search for several queries or questions at once.\n\n"
        "Answer the following questions: {questions}\n"
    ),
    invalid=("Your previous action was invalid. To search, put a query between <search> and </search>; to "
             "answer, put the answers between <answer> and </answer>."),
    source="MEM1 (MIT-MI/MEM1) multi-objective search-QA instruction, restated",
)

# Beyond the paper, for the embedded 135M model (DESIGN §8): a short plain instruction and a worked
# two-turn episode (search, information, answer) as earlier chat turns, before every turn's conversation.
# Measured on 18 single-objective questions (T 0.7, 48 tokens, first turn): 11/18 responses held a closed
# <search> or <answer> with the demo, 0/18 with the instruction alone (RESULTS.md, "Search QA").
_MICRO_INSTRUCTION = (
    "Answer the question. Write notes in <think> </think>. To look something up, write "
    "<search>keywords</search>. When you know the answer, write <answer>the answer</answer>.\n\n"
    "Question: {questions}"
)
SEARCH_MICRO = SearchPromptSet(
    version="micro",
    instruction=_MICRO_INSTRUCTION,
    invalid="Invalid action. Write <search>keywords</search> or <answer>the answer</answer>.",
    source="memtrain micro-scale prompt (beyond the paper)",
    demo=(
        ("user", _MICRO_INSTRUCTION.format(questions="What is the capital of France?")),
        ("assistant", "<think>I need the capital of France.</think><search>capital of France</search>"),
        ("user", '<information>[HINT]You have 2 turns left.[/HINT]\nDoc 1(Title: "Paris") Paris is the '
                 "capital and largest city of France.\n</information>"),
        ("assistant", "<think>Paris is the capital of France.</think><answer>Paris</answer>"),
    ),
)

SEARCH_PROMPT_SETS: dict[str, SearchPromptSet] = {p.version: p for p in (SEARCH_MEM1, SEARCH_MICRO)}


def get_search_prompts(version: str = "mem1") -> SearchPromptSet:
    try:
        return SEARCH_PROMPT_SETS[version]
    except KeyError:
        raise MemtrainError(f"unknown search prompt version {version!r}; known: "
                            f"{sorted(SEARCH_PROMPT_SETS)}") from None


def search_hint(turns_left: int) -> str:
    """MEM1's hint at the head of an ``<information>`` block (its training rollout's wording)."""
    if turns_left > 1:
        return f"[HINT]You have {turns_left} turns left.[/HINT]"
    if turns_left == 1:
        return "[HINT]You have 1 turn left. You must answer the question in the next turn.[/HINT]"
    return ""


def search_messages(questions: str, previous: str | None = None, information: str | None = None,
                    version: str = "mem1") -> list[dict[str, str]]:
    """One turn's conversation: the prompt set's demonstration turns (if any), the instruction with the
    questions; after the first turn also the previous response as kept (assistant) and the latest
    ``<information>`` block (user)."""
    ps = get_search_prompts(version)
    conv = [{"role": role, "content": content} for role, content in ps.demo]
    conv += user(ps.instruction.format(questions=questions))
    if previous is not None:
        conv.append({"role": "assistant", "content": previous})
        conv.append({"role": "user", "content": information or ""})
    return conv
