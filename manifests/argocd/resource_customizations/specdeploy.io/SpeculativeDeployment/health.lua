-- Argo CD health of a SpeculativeDeployment (specdeploy.io), from the status the operator writes: its typed
-- conditions (Ready, Progressing, Degraded) and observedGeneration. Lua 5.1, as Argo CD runs it.
local hs = {}

local function condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local conditions = obj.status.conditions
local generation = obj.metadata.generation or 0
local observed = obj.status.observedGeneration or 0
local degraded = condition(conditions, "Degraded")
-- Degraded about this very generation (a spec the API server refused to apply: the generation is not in effect,
-- so status.observedGeneration still trails it) is Degraded, not Progressing.
if degraded ~= nil and degraded.status == "True" and (degraded.observedGeneration or 0) >= generation then
  hs.status = "Degraded"
  hs.message = (degraded.reason or "Degraded") .. ": " .. (degraded.message or "")
  return hs
end

if observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation .. " (status is for " .. observed .. ")"
  return hs
end

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = (degraded.reason or "Degraded") .. ": " .. (degraded.message or "")
  return hs
end

if obj.spec ~= nil and obj.spec.replicas == 0 then
  hs.status = "Suspended"
  hs.message = "Scaled to zero replicas"
  return hs
end

local progressing = condition(conditions, "Progressing")
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = progressing.message or "Rolling update in progress"
  return hs
end

local ready = condition(conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end

hs.status = "Progressing"
hs.message = (ready ~= nil and ready.message) or "Waiting for replicas to become ready"
return hs
