// The MQTT broker on Azure: an Event Grid namespace with its MQTT broker enabled.
// Clients authenticate with certificates issued by the fleet CA (`vigil hub enroll`):
// the certificate's subject CN must equal the client's authentication name, as the
// Mosquitto broker's use_identity_as_username does on premises. Topic spaces and
// permission bindings enforce docs/ARCHITECTURE.md "Access":
//   gateways publish only vigil/v1/gw/{own id}/..., read only vigil/v1/models/# and
//   their own cmd; only the hub publishes models and commands.
// Event Grid checks SUBSCRIBE against the subscriber topic spaces, so a gateway
// cannot join the hub's `$share/hub/...` group (a gap of Mosquitto 2.0's acl_file).
param location string
param name string
@description('PEM body of the fleet CA certificate (no BEGIN/END lines).')
param fleetCaCertificate string
@description('Gateway ids; each becomes a client whose authentication name is the id.')
param gatewayIds array
param tags object = {}

var own = 'vigil/v1/gw/\${client.authenticationName}'

resource namespace 'Microsoft.EventGrid/namespaces@2023-12-15-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    capacity: 1
  }
  properties: {
    isZoneRedundant: true
    minimumTlsVersionAllowed: '1.2'
    topicSpacesConfiguration: {
      state: 'Enabled'
      // the hub runs up to 3 replicas under the one identity "hub"
      maximumClientSessionsPerAuthenticationName: 4
      maximumSessionExpiryInHours: 8
    }
  }
}

resource fleetCa 'Microsoft.EventGrid/namespaces/caCertificates@2023-12-15-preview' = {
  parent: namespace
  name: 'vigil-fleet-ca'
  properties: {
    description: 'Vigil fleet CA (vigil hub ca init)'
    encodedCertificate: fleetCaCertificate
  }
}

// --- clients -----------------------------------------------------------------------
resource hubClient 'Microsoft.EventGrid/namespaces/clients@2023-12-15-preview' = {
  parent: namespace
  name: 'hub'
  properties: {
    authenticationName: 'hub'
    clientCertificateAuthentication: {
      validationScheme: 'SubjectMatchesAuthenticationName'
    }
    state: 'Enabled'
    attributes: {
      role: 'hub'
    }
  }
  dependsOn: [fleetCa]
}

// Resource names allow [A-Za-z0-9-:]; gateway ids may hold '_' and '.', so the
// resource is named after a cleaned id and the authentication name is the id itself.
resource gatewayClients 'Microsoft.EventGrid/namespaces/clients@2023-12-15-preview' = [
  for gw in gatewayIds: {
    parent: namespace
    name: 'gw-${replace(replace(gw, '_', '-'), '.', '-')}'
    properties: {
      authenticationName: gw
      clientCertificateAuthentication: {
        validationScheme: 'SubjectMatchesAuthenticationName'
      }
      state: 'Enabled'
      attributes: {
        role: 'gateway'
      }
    }
    dependsOn: [fleetCa]
  }
]

// --- client groups -------------------------------------------------------------------
resource gateways 'Microsoft.EventGrid/namespaces/clientGroups@2023-12-15-preview' = {
  parent: namespace
  name: 'gateways'
  properties: {
    query: 'attributes.role IN [\'gateway\']'
  }
}

resource hubs 'Microsoft.EventGrid/namespaces/clientGroups@2023-12-15-preview' = {
  parent: namespace
  name: 'hub'
  properties: {
    query: 'attributes.role IN [\'hub\']'
  }
}

// --- topic spaces (docs/ARCHITECTURE.md "MQTT topics") -------------------------------
resource gwOwn 'Microsoft.EventGrid/namespaces/topicSpaces@2023-12-15-preview' = {
  parent: namespace
  name: 'gw-own-telemetry'
  properties: {
    description: 'What a gateway publishes, under its own id only'
    topicTemplates: [
      '${own}/status'
      '${own}/model'
      '${own}/shadow'
      '${own}/bed/+/vitals'
      '${own}/bed/+/risk'
      '${own}/bed/+/alarm'
      '${own}/bed/+/observation'
    ]
  }
}

resource gwCmd 'Microsoft.EventGrid/namespaces/topicSpaces@2023-12-15-preview' = {
  parent: namespace
  name: 'gw-own-cmd'
  properties: {
    description: 'A gateway reads its own commands'
    topicTemplates: ['${own}/cmd']
  }
}

resource models 'Microsoft.EventGrid/namespaces/topicSpaces@2023-12-15-preview' = {
  parent: namespace
  name: 'models'
  properties: {
    description: 'Signed model releases per channel'
    topicTemplates: ['vigil/v1/models/#']
  }
}

resource fleetTelemetry 'Microsoft.EventGrid/namespaces/topicSpaces@2023-12-15-preview' = {
  parent: namespace
  name: 'fleet-telemetry'
  properties: {
    description: 'Every gateway topic, read by the hub (shared subscription $share/hub/...)'
    topicTemplates: [
      'vigil/v1/gw/+/status'
      'vigil/v1/gw/+/model'
      'vigil/v1/gw/+/shadow'
      'vigil/v1/gw/+/bed/+/vitals'
      'vigil/v1/gw/+/bed/+/risk'
      'vigil/v1/gw/+/bed/+/alarm'
      'vigil/v1/gw/+/bed/+/observation'
    ]
  }
}

resource fleetCmd 'Microsoft.EventGrid/namespaces/topicSpaces@2023-12-15-preview' = {
  parent: namespace
  name: 'fleet-cmd'
  properties: {
    description: 'Commands from the hub to any gateway'
    topicTemplates: ['vigil/v1/gw/+/cmd']
  }
}

// --- permission bindings --------------------------------------------------------------
var bindings = [
  { name: 'gateways-publish-own', group: gateways.name, space: gwOwn.name, permission: 'Publisher' }
  { name: 'gateways-read-own-cmd', group: gateways.name, space: gwCmd.name, permission: 'Subscriber' }
  { name: 'gateways-read-models', group: gateways.name, space: models.name, permission: 'Subscriber' }
  { name: 'hub-read-fleet', group: hubs.name, space: fleetTelemetry.name, permission: 'Subscriber' }
  { name: 'hub-send-cmd', group: hubs.name, space: fleetCmd.name, permission: 'Publisher' }
  { name: 'hub-publish-models', group: hubs.name, space: models.name, permission: 'Publisher' }
  // The hub also reads the releases back: each channel's target in the fleet view.
  { name: 'hub-read-models', group: hubs.name, space: models.name, permission: 'Subscriber' }
]

resource permissionBindings 'Microsoft.EventGrid/namespaces/permissionBindings@2023-12-15-preview' = [
  for b in bindings: {
    parent: namespace
    name: b.name
    properties: {
      clientGroupName: b.group
      topicSpaceName: b.space
      permission: b.permission
    }
  }
]

output mqttHostname string = namespace.properties.topicSpacesConfiguration.hostname
