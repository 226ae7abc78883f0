-- Celery messages built inside a script, from a template made by broker.message_template (which
-- the contract test compares with what Celery and kombu write): @ID@ is the task id, @TAG@ the
-- delivery tag, @ARGSREPR@ repr(args) and @BODY@ the base64 of the protocol-2 body.

local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

local function base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = string.byte(data, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = string.sub(B64, c1 + 1, c1 + 1) .. string.sub(B64, c2 + 1, c2 + 1)
      .. (b and string.sub(B64, c3 + 1, c3 + 1) or '=') .. (c and string.sub(B64, c4 + 1, c4 + 1) or '=')
  end
  return table.concat(out)
end

local function render(template, task_id, argsrepr, body)
  local msg = string.gsub(template, '@ID@', task_id)
  msg = string.gsub(msg, '@TAG@', task_id .. '.t')
  msg = string.gsub(msg, '@ARGSREPR@', argsrepr)
  msg = string.gsub(msg, '@BODY@', base64(body))
  return msg
end

-- The message for task(job_id, dispatch, account) from `template`; `embed` is the body's third
-- element. Job ids are hex and account names [A-Za-z0-9_-], so neither needs JSON escaping.
local function job_message(template, embed, job_id, dispatch, account)
  local task_id = job_id .. '.' .. dispatch
  local body = '[["' .. job_id .. '",' .. dispatch .. ',"' .. account .. '"],{},' .. embed .. ']'
  local argsrepr = "['" .. job_id .. "', " .. dispatch .. ", '" .. account .. "']"
  return render(template, task_id, argsrepr, body)
end

-- The message for the callback task(job_id, attempt) from its `template`.
local function callback_message(template, embed, job_id, attempt)
  local task_id = job_id .. '.cb' .. attempt
  local body = '[["' .. job_id .. '",' .. attempt .. '],{},' .. embed .. ']'
  return render(template, task_id, "['" .. job_id .. "', " .. attempt .. "]", body)
end
