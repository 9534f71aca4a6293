// Blob storage for MLflow artefacts (models, plots, bundles). No shared keys: the
// hub and MLflow reach it with their managed identity (Storage Blob Data Contributor).
param location string
param name string
param contributorPrincipalId string
param tags object = {}

var container = 'mlflow'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_ZRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    supportsHttpsTrafficOnly: true
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 30
    }
  }
}

resource artifacts 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: container
  properties: {
    publicAccess: 'None'
  }
}

// Storage Blob Data Contributor
var blobContributorRole = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')

resource writeBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, contributorPrincipalId, blobContributorRole)
  properties: {
    roleDefinitionId: blobContributorRole
    principalId: contributorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output blobEndpoint string = account.properties.primaryEndpoints.blob
output artifactContainer string = container
output artifactsUri string = 'wasbs://${container}@${account.name}.blob.${environment().suffixes.storage}/artifacts'
