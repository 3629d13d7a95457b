-- POST /api/tests/{attempt_id}/answer, rotating over the lines of the file given after `--`:
-- "attempt_id question_id token" (written by measure.py), one candidate's open attempt per line.
-- Consecutive requests go to different attempts, so row locks do not serialise them.
local requests = {}
local next_index = 0

function init(args)
  for line in io.lines(args[1]) do
    local attempt, question, token = line:match("^(%d+) (%d+) (%S+)$")
    requests[#requests + 1] = wrk.format(
      "POST",
      "/api/tests/" .. attempt .. "/answer",
      { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
      '{"question_id": ' .. question .. ', "answer_text": "def"}'
    )
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
