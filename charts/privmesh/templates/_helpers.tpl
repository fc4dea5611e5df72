{{/*
The mesh's services: values key, object/service-account name, Python module, gRPC service, whether replicas
share nothing local (HPA allowed), and the calls it makes to its peers (the mesh's authorization rules and
NetworkPolicy flows; the same table as privmesh.mesh.catalog, checked by tests/k8s/test_chart.py).
*/}}
{{- define "privmesh.catalog" -}}
- key: attestationVerifier
  name: attestation-verifier
  module: privmesh.attestation
  grpcService: privmesh.attestation.v1.AttestationVerifier
  stateless: true
  calls: {}
- key: keyBroker
  name: key-broker
  module: privmesh.keybroker
  grpcService: privmesh.keybroker.v1.KeyBroker
  stateless: true
  calls:
    attestation-verifier:
      - privmesh.attestation.v1.AttestationVerifier/VerifyAttestation
      - privmesh.attestation.v1.AttestationVerifier/GetVerificationKeys
- key: tokenVault
  name: token-vault
  module: privmesh.tokenvault
  grpcService: privmesh.tokenvault.v1.TokenVault
  stateless: true
  calls:
    key-broker: [privmesh.keybroker.v1.KeyBroker/*]
- key: fheInference
  name: fhe-inference
  module: privmesh.fhe
  grpcService: privmesh.fhe.v1.FHEInference
  stateless: true
  calls: {}
- key: dpGateway
  name: dp-gateway
  module: privmesh.dpgateway
  grpcService: privmesh.dpgateway.v1.DPGateway
  stateless: true
  calls: {}
- key: flCoordinator
  name: fl-coordinator
  module: privmesh.fl
  grpcService: privmesh.fl.v1.FLCoordinator
  stateless: false
  calls:
    attestation-verifier:
      - privmesh.attestation.v1.AttestationVerifier/VerifyAttestation
      - privmesh.attestation.v1.AttestationVerifier/GetPolicy
    key-broker: [privmesh.keybroker.v1.KeyBroker/*]
    fl-coordinator: [privmesh.fl.v1.FLRunReporter/*]
{{- end -}}

{{/* The enabled services of the catalog, as a list of dicts. */}}
{{- define "privmesh.enabledServices" -}}
{{- $out := list -}}
{{- range (include "privmesh.catalog" . | fromYamlArray) -}}
{{- if (index $.Values.services .key).enabled }}{{ $out = append $out . }}{{ end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "privmesh.enabledNames" -}}
{{- $names := list -}}
{{- range (include "privmesh.enabledServices" . | fromYamlArray) }}{{ $names = append $names .name }}{{ end -}}
{{- toYaml $names -}}
{{- end -}}

{{/* Labels of every object (components add their selector labels, which name the instance). */}}
{{- define "privmesh.labels" -}}
app.kubernetes.io/part-of: privmesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (a service name, "enclave-parent", "postgresql"). */}}
{{- define "privmesh.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "privmesh.spiffe" -}}
spiffe://{{ .root.Values.trustDomain }}/ns/{{ .root.Release.Namespace }}/sa/{{ .name }}
{{- end -}}

{{- define "privmesh.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{- define "privmesh.target" -}}
{{ .name }}.{{ .root.Release.Namespace }}.svc:{{ .root.Values.ports.grpc }}
{{- end -}}

{{/* The mesh certificate Secret of a service. */}}
{{- define "privmesh.tlsSecret" -}}
{{- if eq .root.Values.tls.mode "certManager" -}}
{{ .name }}-tls
{{- else -}}
{{ required (printf "tls.existingSecrets.%s is required with tls.mode=existingSecrets" .name) (index .root.Values.tls.existingSecrets .name) }}
{{- end -}}
{{- end -}}

{{/* The database URL of a service (the password comes from PGPASSWORD). */}}
{{- define "privmesh.database" -}}
{{- $pg := .root.Values.postgresql -}}
{{- $db := printf "%s" (.name | replace "-" "_") -}}
{{- if eq $pg.mode "external" -}}
postgresql://{{ $pg.external.user }}@{{ required "postgresql.external.host is required with postgresql.mode=external" $pg.external.host }}:{{ $pg.external.port }}/{{ $pg.external.databasePrefix }}{{ $db }}?sslmode={{ $pg.external.sslmode }}
{{- else if eq $pg.mode "dev" -}}
postgresql://postgres@postgresql.{{ .root.Release.Namespace }}.svc:5432/{{ $pg.dev.databasePrefix }}{{ $db }}?sslmode=disable
{{- else -}}
sqlite:////var/lib/privmesh/{{ $db }}.db
{{- end -}}
{{- end -}}

{{/* Pods of the general workloads stay off the Nitro and GPU node groups (their taints keep them off too). */}}
{{- define "privmesh.generalAffinity" -}}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      - matchExpressions:
          - key: {{ .Values.nodeGroups.nitro.label.key }}
            operator: NotIn
            values: [{{ .Values.nodeGroups.nitro.label.value | quote }}]
          {{- if ne .Values.nodeGroups.gpu.label.key .Values.nodeGroups.nitro.label.key }}
          - key: {{ .Values.nodeGroups.gpu.label.key }}
            operator: NotIn
            values: [{{ .Values.nodeGroups.gpu.label.value | quote }}]
          {{- else }}
          - key: {{ .Values.nodeGroups.gpu.label.key }}
            operator: NotIn
            values: [{{ .Values.nodeGroups.nitro.label.value | quote }}, {{ .Values.nodeGroups.gpu.label.value | quote }}]
          {{- end }}
{{- end -}}

{{/* Pods only on one tainted node group: required affinity to its label, toleration of its taint. */}}
{{- define "privmesh.nodeGroupPlacement" -}}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: {{ .label.key }}
              operator: In
              values: [{{ .label.value | quote }}]
tolerations:
  - key: {{ .taint.key }}
    operator: Equal
    value: {{ .taint.value | quote }}
    effect: {{ .taint.effect }}
{{- end -}}

{{- define "privmesh.restrictedContainer" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "privmesh.restrictedPod" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end -}}


{{- /* fhe-inference: root with CAP_SETUID/CAP_SETGID only, so that its OpenFHE workers become another, unprivileged
user (fhe.sandbox) that cannot read the pod's secrets; see docs/security.md. */ -}}
{{- define "privmesh.sandboxContainer" -}}
securityContext:
  runAsNonRoot: false
  runAsUser: 0
  runAsGroup: 0
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
    add: [SETUID, SETGID]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "privmesh.sandboxPod" -}}
securityContext:
  runAsNonRoot: false
  runAsUser: 0
  runAsGroup: 0
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end -}}
