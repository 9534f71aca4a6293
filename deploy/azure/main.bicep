// Vigil hub on Azure: Container Apps (hub + MLflow), PostgreSQL Flexible Server,
// Blob storage for MLflow artefacts, Key Vault (bundle signing key, hub TLS key),
// and the Event Grid namespace MQTT broker with client-certificate authentication
// and topic spaces that enforce docs/ARCHITECTURE.md "Access". Deployment guide:
// README.md beside this file.
targetScope = 'resourceGroup'

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Short prefix for resource names (3-10 lowercase letters/digits, no hyphen: storage account names allow none).')
@minLength(3)
@maxLength(10)
param namePrefix string = 'vigil'

@description('Existing Azure Container Registry (same resource group) holding vigil-hub.')
param acrName string

@description('Tag of the vigil-hub image to run (CI passes sha-<commit>).')
param hubImageTag string

@description('PostgreSQL administrator login.')
param postgresAdminLogin string = 'vigiladmin'

@description('PostgreSQL administrator password: from the CI secret store, never a file.')
@secure()
param postgresAdminPassword string

@description('The fleet CA certificate (PEM body, no header lines) from `vigil hub ca init`: ca/ca.crt.')
param fleetCaCertificate string

@description('Gateway ids enrolled with `vigil hub enroll` (certificate CN = id).')
param gatewayIds array = []

@description('Deploy the hub and MLflow container apps (false on the very first run, before images exist).')
param deployApps bool = true

var suffix = uniqueString(resourceGroup().id)
var tags = {
  app: 'vigil'
  component: 'hub'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-hub-id'
  location: location
  tags: tags
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    name: take('${namePrefix}kv${suffix}', 24) // Key Vault: at most 24 characters
    readerPrincipalId: identity.properties.principalId
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: take(toLower('${namePrefix}st${suffix}'), 24) // storage: 3-24 lowercase letters/digits
    contributorPrincipalId: identity.properties.principalId
    tags: tags
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    location: location
    name: '${namePrefix}-pg-${suffix}'
    adminLogin: postgresAdminLogin
    adminPassword: postgresAdminPassword
    tags: tags
  }
}

module mqtt 'modules/eventgrid-mqtt.bicep' = {
  name: 'mqtt'
  params: {
    location: location
    name: '${namePrefix}-mqtt-${suffix}'
    fleetCaCertificate: fleetCaCertificate
    gatewayIds: gatewayIds
    tags: tags
  }
}

module apps 'modules/containerapps.bicep' = if (deployApps) {
  name: 'apps'
  params: {
    location: location
    namePrefix: namePrefix
    identityId: identity.id
    identityPrincipalId: identity.properties.principalId
    identityClientId: identity.properties.clientId
    acrName: acrName
    hubImage: '${acrName}.azurecr.io/vigil-hub:${hubImageTag}'
    keyVaultUri: vault.outputs.uri
    keyVaultName: vault.outputs.name
    postgresHost: postgres.outputs.fqdn
    postgresAdminLogin: postgresAdminLogin
    blobEndpoint: storage.outputs.blobEndpoint
    artifactContainer: storage.outputs.artifactContainer
    mqttHost: mqtt.outputs.mqttHostname
    tags: tags
  }
}

output keyVaultName string = vault.outputs.name
output mqttHostname string = mqtt.outputs.mqttHostname
output postgresFqdn string = postgres.outputs.fqdn
output mlflowArtifactsUri string = storage.outputs.artifactsUri
output hubAppName string = deployApps ? apps.outputs.hubAppName : ''
