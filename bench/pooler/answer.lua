-- POST /api/tests/{attempt_id}/answer, rotating over the lines of the file given after `--`:
-- "attempt_id question_id token answer" (written by measure.py), one candidate's open attempt
-- per line; the answer is one of the question's options, JSON-encoded (the API refuses any
-- other with 422 invalid_option). Consecutive requests go to different attempts, so row locks
-- do not serialise them.
local requests = {}
local next_index = 0

function init(args)
  for line in io.lines(args[1]) do
    local attempt, question, token, answer = line:match("^(%d+) (%d+) (%S+) (.+)$")
    requests[#requests + 1] = wrk.format(
      "POST",
      "/api/tests/" .. attempt .. "/answer",
      { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
      '{"question_id": ' .. question .. ', "answer_text": ' .. answer .. '}'
    )
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
