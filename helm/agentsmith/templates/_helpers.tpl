{{/*
Names, labels and the values derived from several settings, in one place.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "agentsmith.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name of the release's objects: fullnameOverride, or the release name with the chart
name appended unless it already holds it. 63 characters at most (DNS label); the Redis objects
append "-redis", so names are cut at 57 for them to fit.
*/}}
{{- define "agentsmith.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 57 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "agentsmith.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels every object carries. */}}
{{- define "agentsmith.labels" -}}
helm.sh/chart: {{ include "agentsmith.chart" . }}
app.kubernetes.io/name: {{ include "agentsmith.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentsmith
{{- end -}}

{{/* Selector labels of the dispatcher pods (never change on upgrade: selectors are immutable). */}}
{{- define "agentsmith.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentsmith.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dispatcher
{{- end -}}

{{/* Selector labels of the Redis pod. */}}
{{- define "agentsmith.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentsmith.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* Name of the dispatcher's ServiceAccount: serviceAccount.name, else the release's full name
(which only a chart that creates it may take). */}}
{{- define "agentsmith.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else if .Values.serviceAccount.create -}}
{{- include "agentsmith.fullname" . -}}
{{- else -}}
{{- fail "serviceAccount.create is false: name the dispatcher's existing ServiceAccount in serviceAccount.name" -}}
{{- end -}}
{{- end -}}

{{/* Name of the agent pods' ServiceAccount (spawner.kubernetes.service_account). */}}
{{- define "agentsmith.agentServiceAccountName" -}}
{{- printf "%s-agent" (include "agentsmith.fullname" .) -}}
{{- end -}}

{{/* Name of the Redis Deployment, Service and claim. */}}
{{- define "agentsmith.redis.fullname" -}}
{{- printf "%s-redis" (include "agentsmith.fullname" .) -}}
{{- end -}}

{{/* Name of the Secret holding the bundled Redis's password, and its key. */}}
{{- define "agentsmith.redis.secretName" -}}
{{- default (include "agentsmith.redis.fullname" .) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "agentsmith.redis.secretKey" -}}
{{- if .Values.redis.auth.existingSecret -}}
{{- .Values.redis.auth.existingSecretKey -}}
{{- else -}}
redis-password
{{- end -}}
{{- end -}}

{{/*
The port the dispatcher listens on in its pod: server.bind, the container port, and the port
of the agents' NetworkPolicy rule for runner callbacks (a policy sees the pod's port, not the
Service's).
*/}}
{{- define "agentsmith.httpPort" -}}
8080
{{- end -}}

{{/* Namespace agent Jobs run in. */}}
{{- define "agentsmith.agentsNamespace" -}}
{{- default .Release.Namespace .Values.agents.namespace -}}
{{- end -}}

{{/* The installation name (server.installation; labels agent Jobs as agentsmith.io/installation). */}}
{{- define "agentsmith.installation" -}}
{{- default (include "agentsmith.fullname" .) .Values.config.installation | replace "." "-" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the Secret the dispatcher's secrets come from. */}}
{{- define "agentsmith.secretName" -}}
{{- default (include "agentsmith.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Name of the agents' Secret (spawner.kubernetes.secret_name), or nothing. */}}
{{- define "agentsmith.agentSecretName" -}}
{{- if .Values.agents.secret.existingSecret -}}
{{- .Values.agents.secret.existingSecret -}}
{{- else if .Values.agents.secret.data -}}
{{- printf "%s-agent" (include "agentsmith.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Images: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "agentsmith.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "agentsmith.agentImage" -}}
{{- printf "%s:%s" .Values.agents.image.repository (default .Chart.AppVersion .Values.agents.image.tag) -}}
{{- end -}}

{{- define "agentsmith.redisImage" -}}
{{- printf "%s:%s" .Values.redis.image.repository .Values.redis.image.tag -}}
{{- end -}}

{{- define "agentsmith.testImage" -}}
{{- if .Values.test.image.repository -}}
{{- printf "%s:%s" .Values.test.image.repository (default .Chart.AppVersion .Values.test.image.tag) -}}
{{- else -}}
{{- include "agentsmith.agentImage" . -}}
{{- end -}}
{{- end -}}

{{/* The dispatcher Service's address inside the cluster: agent runners call back there. */}}
{{- define "agentsmith.internalUrl" -}}
{{- printf "http://%s.%s.svc.cluster.local:%d" (include "agentsmith.fullname" .) .Release.Namespace (int .Values.service.port) -}}
{{- end -}}

{{/*
The user's config.content parsed, with a clear failure when it is not a YAML mapping or holds
a secret (a ConfigMap is no place for one, and the Secret's environment would override it).
*/}}
{{- define "agentsmith.userConfig" -}}
{{- $user := dict -}}
{{- if .Values.config.content -}}
{{- $user = fromYaml .Values.config.content -}}
{{- if hasKey $user "Error" -}}
{{- fail (printf "config.content is not a YAML mapping: %s" (get $user "Error")) -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey $user "api") (hasKey (get $user "api" | default dict) "tokens") -}}
{{- fail "config.content sets api.tokens: give the tokens as secrets.apiTokens (or in secrets.existingSecret) instead, so they stay out of the ConfigMap" -}}
{{- end -}}
{{- if and (hasKey $user "server") (hasKey (get $user "server" | default dict) "runner_secret") -}}
{{- fail "config.content sets server.runner_secret: give it as secrets.runnerSecret (or in secrets.existingSecret) instead, so it stays out of the ConfigMap" -}}
{{- end -}}
{{- $sources := get $user "sources" | default dict -}}
{{- range $source, $keys := dict "slack" (list "signing_secret" "bot_token") "github" (list "webhook_secret" "token") "gitlab" (list "webhook_token" "token") "jira" (list "webhook_secret" "api_token") -}}
{{- range $key := $keys -}}
{{- if hasKey (get $sources $source | default dict) $key -}}
{{- fail (printf "config.content sets sources.%s.%s: give it in secrets.%s (or in secrets.existingSecret) instead, so it stays out of the ConfigMap" $source $key $source) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey $user "redis") (hasKey (get $user "redis" | default dict) "url") -}}
{{- fail "config.content sets redis.url: the chart sets it (bundled Redis), or give externalRedis.url / externalRedis.existingSecret instead" -}}
{{- end -}}
{{- if and (hasKey $user "redis") (hasKey (get $user "redis" | default dict) "sentinel") -}}
{{- fail "config.content sets redis.sentinel: give externalRedis.sentinel instead (masterName, nodes, username, and the passwords in externalRedis.sentinel.existingSecret), so they stay out of the ConfigMap" -}}
{{- end -}}
{{- if and (get (get $user "redis" | default dict) "cluster") (not .Values.externalRedis.cluster) -}}
{{- fail "config.content sets redis.cluster: set externalRedis.cluster=true instead, so the chart checks the rest of the Redis set-up (the key prefix, Sentinel, the bundled Redis) against it" -}}
{{- end -}}
{{- toYaml $user -}}
{{- end -}}

{{/* server.shutdown_grace_secs as the dispatcher will see it. */}}
{{- define "agentsmith.shutdownGraceSecs" -}}
{{- $user := fromYaml (include "agentsmith.userConfig" .) -}}
{{- $server := get $user "server" | default dict -}}
{{- get $server "shutdown_grace_secs" | default 20 | int -}}
{{- end -}}

{{/* Where the kubeconfig of a target in another cluster is mounted (a directory). Takes the target's name. */}}
{{- define "agentsmith.targetKubeconfigDir" -}}
{{- printf "/etc/agentsmith/targets/%s" . -}}
{{- end -}}

{{/*
The `targets` value as agentsmith.yml's spawners section, the chart's layer under
config.content's: each entry without kubeconfigSecret (the chart's key: the dispatcher refuses
keys it does not know), its type kubernetes unless it names another (the dispatcher's own
default, process, cannot run in its image). Fails on a kubeconfigSecret of another type.
*/}}
{{- define "agentsmith.targetSpawners" -}}
{{- $spawners := dict -}}
{{- range $name, $target := .Values.targets -}}
{{- $target = deepCopy ($target | default dict) -}}
{{- $type := toString (get $target "type" | default "kubernetes") -}}
{{- if and (get $target "kubeconfigSecret") (ne $type "kubernetes") -}}
{{- fail (printf "targets.%s.kubeconfigSecret is set but targets.%s.type is %s: a kubeconfig is for a kubernetes target" $name $name $type) -}}
{{- end -}}
{{- $_ := set $spawners $name (merge (omit $target "kubeconfigSecret") (dict "type" "kubernetes")) -}}
{{- end -}}
{{- toYaml $spawners -}}
{{- end -}}

{{/*
agentsmith.yml as the dispatcher reads it, in three layers: the chart's defaults for agent
pods and its more targets (from values), the user's config.content over them, and the settings
the chart must control (where the dispatcher listens, where runners call back, in-cluster
access, the namespace, service account and Secret it created, the kubeconfigs it mounts) over
both.
*/}}
{{- define "agentsmith.configFile" -}}
{{- $user := fromYaml (include "agentsmith.userConfig" .) -}}
{{- $k8sDefaults := dict
      "ttl_seconds_after_finished" (int .Values.agents.ttlSecondsAfterFinished)
      "image_pull_policy" .Values.agents.image.pullPolicy
      "memory" .Values.agents.memory
      "cpus" (toString .Values.agents.cpus)
      "cpu_request" (toString .Values.agents.cpuRequest)
-}}
{{- if .Values.imagePullSecrets -}}
{{- $_ := set $k8sDefaults "image_pull_secrets" .Values.imagePullSecrets -}}
{{- end -}}
{{- if .Values.agents.nodeSelector -}}
{{- $_ := set $k8sDefaults "node_selector" .Values.agents.nodeSelector -}}
{{- end -}}
{{- if .Values.agents.tolerations -}}
{{- $_ := set $k8sDefaults "tolerations" .Values.agents.tolerations -}}
{{- end -}}
{{- if .Values.agents.affinity -}}
{{- $_ := set $k8sDefaults "affinity" .Values.agents.affinity -}}
{{- end -}}
{{- if .Values.agents.profileShapes -}}
{{- $_ := set $k8sDefaults "profiles" .Values.agents.profileShapes -}}
{{- end -}}
{{- $defaults := dict "spawner" (dict "kubernetes" $k8sDefaults) -}}
{{- /* More targets, only when given (dispatchers that predate spawners refuse the key). */ -}}
{{- with include "agentsmith.targetSpawners" . | fromYaml -}}
{{- $_ := set $defaults "spawners" . -}}
{{- end -}}
{{- /*
  On Redis Cluster every key of the installation must be in one hash slot, so the prefix needs
  a hash tag: "{agentsmith}:", the dispatcher's own "agentsmith:" with its name as the tag. A
  default, so config.content's prefix is laid over it; agentsmith.checkRedis refuses one
  without a tag. (README.md, "Redis Cluster", says why a default rather than a failure.)
*/ -}}
{{- if include "agentsmith.clusterEnabled" . -}}
{{- $_ := set $defaults "redis" (dict "prefix" "{agentsmith}:") -}}
{{- end -}}
{{- $managedK8s := dict
      "namespace" (include "agentsmith.agentsNamespace" .)
      "service_account" (include "agentsmith.agentServiceAccountName" .)
-}}
{{- /* The extra CA certificates, mounted in agent pods too. */ -}}
{{- with (.Values.extraCaBundle.existingConfigMap | default (and .Values.extraCaBundle.content (printf "%s-ca" (include "agentsmith.fullname" .)))) -}}
{{- $_ := set $managedK8s "ca_bundle" (dict "config_map" . "key" $.Values.extraCaBundle.key) -}}
{{- end -}}
{{- /* The agents' Secret when the chart knows one; else whatever config.content names. */ -}}
{{- with include "agentsmith.agentSecretName" . -}}
{{- $_ := set $managedK8s "secret_name" . -}}
{{- end -}}
{{- /*
  spawner.kubernetes.env (the environment of every agent container) is only emitted when a
  proxy is set: dispatchers that predate the key refuse it as unknown.
*/ -}}
{{- $proxyEnv := include "agentsmith.proxyEnv" . | fromYaml -}}
{{- if $proxyEnv -}}
{{- $_ := set $managedK8s "env" $proxyEnv -}}
{{- end -}}
{{- $managed := dict
      "server" (dict
        "bind" (printf "0.0.0.0:%s" (include "agentsmith.httpPort" .))
        "public_url" (include "agentsmith.internalUrl" .)
        "installation" (include "agentsmith.installation" .))
      "spawner" (dict "type" "kubernetes" "kubernetes" $managedK8s)
-}}
{{- /* A target in another cluster reaches it through the kubeconfig the chart mounts. */ -}}
{{- $managedSpawners := dict -}}
{{- range $name, $target := .Values.targets -}}
{{- if get ($target | default dict) "kubeconfigSecret" -}}
{{- $kubeconfig := printf "%s/kubeconfig" (include "agentsmith.targetKubeconfigDir" $name) -}}
{{- $_ := set $managedSpawners $name (dict "kubernetes" (dict "kubeconfig" $kubeconfig)) -}}
{{- end -}}
{{- end -}}
{{- if $managedSpawners -}}
{{- $_ := set $managed "spawners" $managedSpawners -}}
{{- end -}}
{{- /* A source whose secret the chart holds is on. */ -}}
{{- $enabled := dict -}}
{{- range $source, $secret := dict "slack" .Values.secrets.slack.signingSecret "github" .Values.secrets.github.webhookSecret "gitlab" .Values.secrets.gitlab.webhookToken "jira" .Values.secrets.jira.webhookSecret -}}
{{- if $secret -}}
{{- $_ := set $enabled $source (dict "enabled" true) -}}
{{- end -}}
{{- end -}}
{{- if $enabled -}}
{{- $_ := set $managed "sources" $enabled -}}
{{- end -}}
{{- /*
  Redis Sentinel's names, Redis Cluster and WAIT's replica count, only when set (dispatchers
  that predate the keys refuse them as unknown). The names go here rather than in the
  environment, where a numeric-looking name would be read as a number; the sentinels' URLs and
  the passwords are in the environment (agentsmith.redisEnv), as is a cluster node's URL.
*/ -}}
{{- $redis := dict -}}
{{- if include "agentsmith.clusterEnabled" . -}}
{{- $_ := set $redis "cluster" true -}}
{{- end -}}
{{- if include "agentsmith.sentinelEnabled" . -}}
{{- $sentinel := dict "master_name" (toString .Values.externalRedis.sentinel.masterName) -}}
{{- with .Values.externalRedis.sentinel.username -}}
{{- $_ := set $sentinel "username" (toString .) -}}
{{- end -}}
{{- $_ := set $redis "sentinel" $sentinel -}}
{{- end -}}
{{- if gt (int .Values.externalRedis.minReplicasAcked) 0 -}}
{{- $_ := set $redis "min_replicas_acked" (int .Values.externalRedis.minReplicasAcked) -}}
{{- end -}}
{{- if $redis -}}
{{- $_ := set $managed "redis" $redis -}}
{{- end -}}
{{- $config := mergeOverwrite $defaults $user $managed -}}
{{- /* In-cluster access, whatever config.content says (an empty value would not override). */ -}}
{{- $k8s := get (get $config "spawner") "kubernetes" -}}
{{- $_ := unset $k8s "kubeconfig" -}}
{{- $_ := unset $k8s "context" -}}
{{- /* Agent profiles: the user's, each with an image (agents.image unless it names one), or the demo profile. */ -}}
{{- $agents := get $config "agents" | default dict -}}
{{- if not $agents -}}
{{- $agents = dict "echo" (dict
      "command" (list "sh" "-c" "echo \"agent starting: $AGENTSMITH_TASK\"; for step in 1 2 3; do echo \"step $step of 3\"; sleep 1; done; printf '{\"summary\":\"did: %s\",\"links\":[]}' \"$AGENTSMITH_TASK\" > \"$AGENTSMITH_RESULT_FILE\"; echo \"agent done\"")
      "timeout_secs" 600) -}}
{{- end -}}
{{- /*
  agents.disk goes only into profiles that set no disk, and only when given: dispatchers that
  predate the key refuse it as unknown, and without it they apply their own default.
*/ -}}
{{- range $name, $profile := $agents -}}
{{- $profile = $profile | default dict -}}
{{- $added := dict -}}
{{- if not (get $profile "image") -}}
{{- $_ := set $added "image" (include "agentsmith.agentImage" $) -}}
{{- end -}}
{{- if and $.Values.agents.disk (not (hasKey $profile "disk")) -}}
{{- $_ := set $added "disk" (toString $.Values.agents.disk) -}}
{{- end -}}
{{- $_ := set $agents $name (merge $added $profile) -}}
{{- end -}}
{{- $_ := set $config "agents" $agents -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Proxy variables (HTTP_PROXY, HTTPS_PROXY, NO_PROXY and their lowercase forms) as a YAML map, or nothing. */}}
{{- define "agentsmith.proxyEnv" -}}
{{- if or .Values.proxy.httpProxy .Values.proxy.httpsProxy -}}
{{- $env := dict -}}
{{- with .Values.proxy.httpProxy -}}
{{- $_ := set $env "HTTP_PROXY" . -}}
{{- $_ := set $env "http_proxy" . -}}
{{- end -}}
{{- with .Values.proxy.httpsProxy -}}
{{- $_ := set $env "HTTPS_PROXY" . -}}
{{- $_ := set $env "https_proxy" . -}}
{{- end -}}
{{- with .Values.proxy.noProxy -}}
{{- $_ := set $env "NO_PROXY" . -}}
{{- $_ := set $env "no_proxy" . -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}
{{- end -}}

{{/*
The data of a Secret as the cluster holds it (values base64-encoded), as YAML; `{}` when there
is none, and always in `helm template`, `helm lint` and `--dry-run`, which cannot look. What the
chart generates is read back through this on every upgrade, so it is made only once.
Takes (list namespace name).
*/}}
{{- define "agentsmith.clusterSecretData" -}}
{{- $secret := lookup "v1" "Secret" (index . 0) (index . 1) | default dict -}}
{{- get $secret "data" | default dict | toYaml -}}
{{- end -}}

{{/*
The API tokens for the chart's Secret, base64-encoded: secrets.apiTokens; else the ones the
Secret holds already (generated at install, or given as values before); else a new random one.
*/}}
{{- define "agentsmith.apiTokensB64" -}}
{{- if .Values.secrets.apiTokens -}}
{{- join "," .Values.secrets.apiTokens | b64enc -}}
{{- else -}}
{{- $held := include "agentsmith.clusterSecretData" (list .Release.Namespace (include "agentsmith.fullname" .)) | fromYaml -}}
{{- get $held "api-tokens" | default (randAlphaNum 40 | b64enc) -}}
{{- end -}}
{{- end -}}

{{/*
A hash of the values the dispatcher's secrets are made from, for the checksum/secret annotation.
Of the values and not of the rendered Secrets: a generated token or password is random in every
render that cannot look it up (the checksum's own included), yet never changes in the cluster,
and must not roll the pods. externalRedis.sentinel, cluster and minReplicasAcked hold no secret
(a change shows in the pod template or the ConfigMap) and are left out, so the same values keep
the checksum chart 0.3.0 made and an upgrade to this chart does not roll the pods for nothing.
*/}}
{{- define "agentsmith.secretsChecksum" -}}
{{- $externalRedis := omit .Values.externalRedis "sentinel" "cluster" "minReplicasAcked" -}}
{{- dict "secrets" .Values.secrets "externalRedis" $externalRedis "redisAuth" .Values.redis.auth "redis" .Values.redis.enabled | toJson | sha256sum -}}
{{- end -}}

{{/* "true" when the dispatcher finds its Redis through Sentinel (externalRedis.sentinel.nodes), else empty. */}}
{{- define "agentsmith.sentinelEnabled" -}}
{{- /* default dict: values kept from chart 0.3.0 (helm upgrade --reuse-values) have no sentinel. */ -}}
{{- if and (not .Values.redis.enabled) (.Values.externalRedis.sentinel | default dict).nodes -}}
true
{{- end -}}
{{- end -}}

{{/*
"true" when the dispatcher's Redis is a Redis Cluster (externalRedis.cluster, with an external
Redis), else empty. Values kept from chart 0.3.0 (helm upgrade --reuse-values) have no cluster.
*/}}
{{- define "agentsmith.clusterEnabled" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.cluster -}}
true
{{- end -}}
{{- end -}}

{{/*
The key prefix agentsmith.yml gives the dispatcher, or nothing when it sets none (the
dispatcher's own default then applies: "agentsmith:").
*/}}
{{- define "agentsmith.redisPrefix" -}}
{{- $redis := get (include "agentsmith.configFile" . | fromYaml) "redis" | default dict -}}
{{- if hasKey $redis "prefix" -}}
{{- get $redis "prefix" | toString -}}
{{- end -}}
{{- end -}}

{{/*
Where the dispatcher's Redis password comes from when the chart builds its Redis URL: the Secret
and key, as YAML (empty for a URL given whole). The Secret goes into the dispatcher's envFrom
with the prefix REDIS_SECRET_, and the URL names the key as $(REDIS_SECRET_<key>): Kubernetes
expands it from there. envFrom, not an env entry before the URL: the kubelet expands $(...)
only from variables defined earlier, and an upgrade by server-side apply on Kubernetes 1.20
appends new env entries after the existing ones (the URL came first in chart 0.1.0).
*/}}
{{- define "agentsmith.redisPasswordSource" -}}
{{- if .Values.redis.enabled -}}
name: {{ include "agentsmith.redis.secretName" . }}
key: {{ include "agentsmith.redis.secretKey" . }}
{{- else if include "agentsmith.sentinelEnabled" . -}}
{{- with .Values.externalRedis.sentinel -}}
{{- if and .existingSecret .existingSecretSentinelPasswordKey }}
name: {{ .existingSecret }}
key: {{ .existingSecretSentinelPasswordKey }}
{{- end -}}
{{- end -}}
{{- else if and .Values.externalRedis.host .Values.externalRedis.existingSecret -}}
name: {{ .Values.externalRedis.existingSecret }}
key: {{ .Values.externalRedis.existingSecretPasswordKey }}
{{- end -}}
{{- end -}}

{{/* The dispatcher's envFrom for its Redis password (see agentsmith.redisPasswordSource), or nothing. */}}
{{- define "agentsmith.redisEnvFrom" -}}
{{- with include "agentsmith.redisPasswordSource" . | fromYaml -}}
- prefix: REDIS_SECRET_
  secretRef:
    name: {{ .name }}
{{- end -}}
{{- end -}}

{{/*
The sentinels' URLs, comma-separated, as AGENTSMITH__REDIS__SENTINEL__NODES wants them:
redis://[:$(REDIS_SECRET_<key>)@]host:port, each host:port of externalRedis.sentinel.nodes with
the scheme added (the dispatcher refuses a node without it) and the sentinels' port when none is
given (a Redis URL without a port would mean 6379). Takes (list context auth).
*/}}
{{- define "agentsmith.sentinelNodes" -}}
{{- $auth := index . 1 -}}
{{- $nodes := list -}}
{{- range (index . 0).Values.externalRedis.sentinel.nodes -}}
{{- $address := trimSuffix "/" (trimPrefix "redis://" .) -}}
{{- if not (regexMatch ":[0-9]+$" $address) -}}
{{- $address = printf "%s:26379" $address -}}
{{- end -}}
{{- $nodes = append $nodes (printf "redis://%s%s" $auth $address) -}}
{{- end -}}
{{- join "," $nodes -}}
{{- end -}}

{{/*
The dispatcher's Redis variables: AGENTSMITH__REDIS__URL, built here with the password by
reference or a Secret's; or, with Sentinel, the sentinels' URLs (their password by reference)
and the password of the primary and its replicas from its Secret.
*/}}
{{- define "agentsmith.redisEnv" -}}
{{- $source := include "agentsmith.redisPasswordSource" . | fromYaml -}}
{{- $auth := "" -}}
{{- with $source -}}
{{- $auth = printf ":$(REDIS_SECRET_%s)@" .key -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
- name: AGENTSMITH__REDIS__URL
  value: {{ printf "redis://%s%s:6379" $auth (include "agentsmith.redis.fullname" .) | quote }}
{{- else if include "agentsmith.sentinelEnabled" . -}}
- name: AGENTSMITH__REDIS__SENTINEL__NODES
  value: {{ include "agentsmith.sentinelNodes" (list . $auth) | quote }}
{{- with .Values.externalRedis.sentinel -}}
{{- if and .existingSecret .existingSecretPasswordKey }}
- name: AGENTSMITH__REDIS__SENTINEL__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .existingSecretPasswordKey }}
{{- end -}}
{{- end -}}
{{- else if .Values.externalRedis.host -}}
- name: AGENTSMITH__REDIS__URL
  value: {{ printf "%s://%s%s:%d" (ternary "rediss" "redis" .Values.externalRedis.tls.enabled) $auth .Values.externalRedis.host (int .Values.externalRedis.port) | quote }}
{{- else if .Values.externalRedis.existingSecret -}}
- name: AGENTSMITH__REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else -}}
- name: AGENTSMITH__REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "agentsmith.secretName" . }}
      key: redis-url
{{- end -}}
{{- end -}}

{{/*
Addresses that are not public, which agent pods never reach through agents.egress.publicPorts.
IPv4: "this" network, private (10/8, 172.16/12, 192.168/16), shared (100.64/10: carrier-grade
NAT, some clusters' pods), Alibaba Cloud's metadata (100.100.100.200, inside 100.64/10: named so
no one wonders), loopback, link-local (169.254/16: the metadata address of AWS, GCP and Azure,
ECS task metadata 169.254.170.2 and .23, NodeLocal DNS), IETF protocol assignments (192.0.0/24),
benchmarking (198.18/15), multicast and reserved (224/4, 240/4).
*/}}
{{- define "agentsmith.nonPublicIPv4" -}}
{{- list "0.0.0.0/8" "10.0.0.0/8" "100.64.0.0/10" "100.100.100.200/32" "127.0.0.0/8" "169.254.0.0/16" "172.16.0.0/12" "192.0.0.0/24" "192.168.0.0/16" "198.18.0.0/15" "224.0.0.0/4" "240.0.0.0/4" | toJson -}}
{{- end -}}

{{/*
Public IPv6 is the global unicast block 2000::/3: outside it lie loopback (::1), IPv4-mapped
(::ffff:0:0/96), NAT64 (64:ff9b::/96, which reaches private IPv4 through a NAT64 gateway),
unique local (fc00::/7, with AWS's metadata fd00:ec2::254), link-local (fe80::/10) and multicast
(ff00::/8). (`::/0` with those as exceptions would say the same, but Kubernetes refuses
::ffff:0:0/96 as an exception of ::/0.) Inside it, 6to4 (2002::/16) carries any IPv4 address,
private ones included, and is excluded.
*/}}
{{- define "agentsmith.nonPublicIPv6" -}}
{{- list "2002::/16" | toJson -}}
{{- end -}}

{{/* Fails on an API token the dispatcher would split (the schema checks the rest of its shape). */}}
{{- define "agentsmith.checkApiTokens" -}}
{{- range .Values.secrets.apiTokens -}}
{{- if contains "," . -}}
{{- fail "secrets.apiTokens: a token may not contain ',' (the dispatcher reads them as a comma-separated list)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Fails on a Redis set-up that cannot work. */}}
{{- define "agentsmith.checkRedis" -}}
{{- $sentinel := .Values.externalRedis.sentinel | default dict -}}
{{- if .Values.externalRedis.cluster -}}
{{- if .Values.redis.enabled -}}
{{- fail "externalRedis.cluster is true but redis.enabled is true (the bundled Redis is one server, not a cluster): set redis.enabled=false and name a node of your cluster in externalRedis.url, externalRedis.host or externalRedis.existingSecret" -}}
{{- end -}}
{{- if or $sentinel.nodes $sentinel.masterName -}}
{{- fail "externalRedis.cluster and externalRedis.sentinel are both set: give one (a Redis Cluster fails over by itself; Sentinel watches a primary with replicas)" -}}
{{- end -}}
{{- if hasPrefix "unix://" (toString .Values.externalRedis.url) -}}
{{- fail "externalRedis.url is a unix:// socket, but externalRedis.cluster needs a node of the cluster: redis://host:port or rediss://host:port" -}}
{{- end -}}
{{- /* A hash tag as Redis reads one: the text between the first "{" and the first "}" after it, not empty. */ -}}
{{- $prefix := include "agentsmith.redisPrefix" . -}}
{{- if not (regexMatch "^[^{]*\\{[^}]+\\}" $prefix) -}}
{{- fail (printf "config.content sets redis.prefix %q, which has no hash tag, and externalRedis.cluster is true: give it one, e.g. \"{agentsmith}:\" (the queue's scripts reach many of its keys at once, so on Redis Cluster they must share one hash slot), or leave redis.prefix out for the chart's \"{agentsmith}:\"" $prefix) -}}
{{- end -}}
{{- end -}}
{{- if or $sentinel.nodes $sentinel.masterName -}}
{{- if not $sentinel.masterName -}}
{{- fail "externalRedis.sentinel.masterName is needed with externalRedis.sentinel.nodes: the name the sentinels monitor the primary by (`sentinel monitor <name> ...`)" -}}
{{- end -}}
{{- if not $sentinel.nodes -}}
{{- fail "externalRedis.sentinel.nodes is needed with externalRedis.sentinel.masterName: list the sentinels (host:26379)" -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- fail "externalRedis.sentinel is set but redis.enabled is true (the bundled Redis): set redis.enabled=false to use the Sentinel-managed Redis" -}}
{{- end -}}
{{- if or .Values.externalRedis.url .Values.externalRedis.host .Values.externalRedis.existingSecret -}}
{{- fail "externalRedis.sentinel is set together with externalRedis.url, externalRedis.host or externalRedis.existingSecret: give one (with Sentinel the sentinels name the primary; the passwords go in externalRedis.sentinel.existingSecret)" -}}
{{- end -}}
{{- if .Values.externalRedis.tls.enabled -}}
{{- fail "externalRedis.tls.enabled is not supported with externalRedis.sentinel: the dispatcher speaks TLS neither to sentinels nor to a Sentinel-managed primary" -}}
{{- end -}}
{{- if and $sentinel.existingSecretSentinelPasswordKey (not $sentinel.existingSecret) -}}
{{- fail "externalRedis.sentinel.existingSecretSentinelPasswordKey is set without externalRedis.sentinel.existingSecret: name the Secret that holds the sentinels' password" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.enabled (gt (int .Values.externalRedis.minReplicasAcked) 0) -}}
{{- fail (printf "externalRedis.minReplicasAcked is %d, but the bundled Redis (redis.enabled) has no replicas: every write would fail; use it with an external Redis that has replicas, or leave it 0" (int .Values.externalRedis.minReplicasAcked)) -}}
{{- end -}}
{{- if not .Values.redis.enabled -}}
{{- if and (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) (not .Values.externalRedis.host) (not $sentinel.nodes) -}}
{{- fail "redis.enabled is false: set externalRedis.url, externalRedis.existingSecret (with externalRedis.existingSecretKey) naming a Secret that holds the Redis URL, externalRedis.host (with the password in externalRedis.existingSecret), or externalRedis.sentinel (masterName and nodes)" -}}
{{- end -}}
{{- if and .Values.externalRedis.url .Values.externalRedis.host -}}
{{- fail "externalRedis.url and externalRedis.host are both set: give one (host builds the URL from host, port, tls.enabled and the password in existingSecret)" -}}
{{- end -}}
{{- if and .Values.externalRedis.url .Values.secrets.existingSecret (not .Values.externalRedis.existingSecret) -}}
{{- fail "externalRedis.url is a secret and the chart creates no Secret when secrets.existingSecret is set: put the URL in a Secret (it may be the same one) and set externalRedis.existingSecret and externalRedis.existingSecretKey" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The container security context of every container the chart runs (restricted). */}}
{{- define "agentsmith.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
