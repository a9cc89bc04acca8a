import { configureEcho } from '@laravel/echo-vue'

export interface Broadcasting {
  key: string
  host: string
  port: number
  authEndpoint: string
}

export function setupEcho(settings: Broadcasting): void {
  configureEcho({
    broadcaster: 'reverb',
    key: settings.key,
    wsHost: settings.host,
    wsPort: settings.port,
    wssPort: settings.port,
    forceTLS: false,
    enabledTransports: ['ws', 'wss'],
    authEndpoint: settings.authEndpoint,
  })
}
