# !!! INSECURE: DEVELOPMENT ONLY — ALLOWS THE HOST EVERYTHING !!!
#
# Coffer agent policy that allows every request: exec, stdin, policy
# replacement, any image and any container spec. A pod running under it
# has no protection from the host beyond memory encryption: the host can
# exec a shell that prints the workload's secrets. Use it to debug a pod,
# never for data you need to keep. Its init-data digest (and hence the
# attestation) differs from any real policy's, so a KBS whose policy pins
# the agent policy will not release keys to a guest running it.
#
# Rule names: one per request message of api/agent/v1/agent.proto, plus the
# stream and reserved pseudo-requests (see default.rego).
package agent_policy

default HealthRequest := true

default DiagnosticsRequest := true

default InitSandboxRequest := true

default GetAttestationEventRequest := true

default PullImageRequest := true

default CreateContainerRequest := true

default StartContainerRequest := true

default ExecProcessRequest := true

default SignalProcessRequest := true

default WaitProcessRequest := true

default CloseStdinRequest := true

default ResizeTTYRequest := true

default StatsRequest := true

default ListPidsRequest := true

default RemoveContainerRequest := true

default GetOOMEventRequest := true

default ShutdownRequest := true

default ReadStreamRequest := true

default WriteStreamRequest := true

default CopyFileRequest := true

default SetPolicyRequest := true
