// Container Apps: the hub (MQTT ingest, store, retrain, sign, roll out) and an MLflow
// tracking server (PostgreSQL backend, Blob artefacts), both from the vigil-hub image.
// Secrets come from Key Vault references resolved with the hub's managed identity,
// mounted as files under /mnt/secrets; none is in this template or the image.
param location string
param namePrefix string
param identityId string
param identityPrincipalId string
param identityClientId string
param acrName string
param hubImage string
param keyVaultUri string
param keyVaultName string
param postgresHost string
param postgresAdminLogin string
param blobEndpoint string
param artifactContainer string
param mqttHost string
param tags object = {}

resource acr 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: acrName
}

// AcrPull
var acrPullRole = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')

resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: acr
  name: guid(acr.id, identityPrincipalId, acrPullRole)
  properties: {
    roleDefinitionId: acrPullRole
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
  }
}

resource env 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${namePrefix}-env'
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

var mlflowName = '${namePrefix}-mlflow'
var mlflowHost = '${mlflowName}.internal.${env.properties.defaultDomain}'
var registries = [
  {
    server: '${acrName}.azurecr.io'
    identity: identityId
  }
]
// Key Vault secrets the operator puts in place before the first deploy (README.md).
var kvSecret = '${keyVaultUri}secrets'

resource mlflow 'Microsoft.App/containerApps@2024-03-01' = {
  name: mlflowName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: env.id
    configuration: {
      ingress: {
        external: false
        targetPort: 5000
        transport: 'http'
      }
      registries: registries
      secrets: [
        {
          name: 'mlflow-backend-uri'
          keyVaultUrl: '${kvSecret}/mlflow-backend-uri'
          identity: identityId
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'mlflow'
          image: hubImage
          command: ['/bin/sh', '-c']
          args: [
            'exec mlflow server --host 0.0.0.0 --port 5000 --workers 2 --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --artifacts-destination "wasbs://${artifactContainer}@${replace(replace(blobEndpoint, 'https://', ''), '/', '')}/artifacts" --serve-artifacts --allowed-hosts "${mlflowHost},${mlflowName}"'
          ]
          env: [
            { name: 'MLFLOW_BACKEND_STORE_URI', secretRef: 'mlflow-backend-uri' }
            // DefaultAzureCredential picks the user-assigned identity for Blob access.
            { name: 'AZURE_CLIENT_ID', value: identityClientId }
          ]
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 1
      }
    }
  }
  dependsOn: [pull]
}

resource hub 'Microsoft.App/containerApps@2024-03-01' = {
  name: '${namePrefix}-hub'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: env.id
    configuration: {
      activeRevisionsMode: 'Single'
      registries: registries
      secrets: [
        { name: 'database-url', keyVaultUrl: '${kvSecret}/database-url', identity: identityId }
        { name: 'hub-tls-cert', keyVaultUrl: '${kvSecret}/hub-tls-cert', identity: identityId }
        { name: 'hub-tls-key', keyVaultUrl: '${kvSecret}/hub-tls-key', identity: identityId }
      ]
    }
    template: {
      containers: [
        {
          name: 'hub'
          image: hubImage
          args: ['hub', 'serve']
          env: [
            { name: 'VIGIL_HOME', value: '/var/lib/vigil' }
            // cloud_hub.settings.HubSettings reads VIGIL_HUB_<FIELD>
            { name: 'VIGIL_HUB_DB_URL', secretRef: 'database-url' }
            { name: 'VIGIL_HUB_MQTT_HOST', value: mqttHost }
            { name: 'VIGIL_HUB_MQTT_PORT', value: '8883' }
            // Event Grid presents a publicly trusted server certificate: the system CA store.
            { name: 'VIGIL_HUB_TLS_CA', value: '/etc/ssl/certs/ca-certificates.crt' }
            { name: 'VIGIL_HUB_TLS_CERT', value: '/mnt/secrets/hub-tls-cert' }
            { name: 'VIGIL_HUB_TLS_KEY', value: '/mnt/secrets/hub-tls-key' }
            { name: 'VIGIL_HUB_METRICS_PORT', value: '8000' }
            { name: 'MLFLOW_TRACKING_URI', value: 'https://${mlflowHost}' }
            // cloud_hub.keys reads the Ed25519 key from Key Vault into memory (managed identity)
            { name: 'VIGIL_SIGNING_KEY', value: 'azurekv://${keyVaultName}/bundle-signing-key' }
            { name: 'AZURE_CLIENT_ID', value: identityClientId }
            { name: 'POSTGRES_HOST', value: postgresHost }
            { name: 'POSTGRES_USER', value: postgresAdminLogin }
          ]
          volumeMounts: [
            { volumeName: 'secrets', mountPath: '/mnt/secrets' }
          ]
          resources: {
            cpu: json('1.0')
            memory: '2Gi'
          }
        }
      ]
      volumes: [
        {
          name: 'secrets'
          storageType: 'Secret'
          secrets: [
            { secretRef: 'hub-tls-cert', path: 'hub-tls-cert' }
            { secretRef: 'hub-tls-key', path: 'hub-tls-key' }
          ]
        }
      ]
      // Several workers share the gateway topics through $share/hub/... (docs/ARCHITECTURE.md "MQTT topics").
      scale: {
        minReplicas: 1
        maxReplicas: 3
      }
    }
  }
  dependsOn: [pull, mlflow]
}

output hubAppName string = hub.name
output mlflowUrl string = 'https://${mlflowHost}'
