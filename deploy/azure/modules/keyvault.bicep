// Key Vault for the hub's secrets: the Ed25519 bundle signing key, the hub's MQTT
// client key and certificate, the database URLs. Secrets are put here by the operator
// (`az keyvault secret set --file`, README.md), never by this template.
// Ed25519 is not a Key Vault *key* type, so the signing key is a Key Vault *secret*
// (PEM) read by the hub at start; access is by RBAC and every read is audited.
param location string
param name string
@description('Principal that may read secrets (the hub identity).')
param readerPrincipalId string
param tags object = {}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

// Key Vault Secrets User
var secretsUserRole = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource readSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, readerPrincipalId, secretsUserRole)
  properties: {
    roleDefinitionId: secretsUserRole
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
